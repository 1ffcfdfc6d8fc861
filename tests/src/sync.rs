//! How the harness takes a lock. A panic while the lock was held (a failed assertion in a
//! relay task or a test thread) leaves the data usable, so it must not become a second,
//! unrelated `PoisonError` in every test that touches the lock afterwards.

use std::sync::{Mutex, MutexGuard};

/// `mutex` locked, whether or not an earlier holder panicked.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
