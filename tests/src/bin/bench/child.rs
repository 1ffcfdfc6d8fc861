//! One function process: spawned with a clean, Lambda-shaped environment, killed at the end
//! of its run and reaped with `wait4`, whose `rusage` gives the peak RSS.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::BenchError;

pub struct FunctionProcess {
    pid: libc::pid_t,
    reaped: bool,
    pub spawned_at: Instant,
}

impl FunctionProcess {
    /// Spawns `binary` with exactly `env` (nothing inherited, as on Lambda) and its output
    /// appended to `log`. `spawned_at` is taken just before the fork.
    pub fn spawn(
        binary: &Path,
        env: &[(String, String)],
        log: &Path,
    ) -> Result<FunctionProcess, BenchError> {
        let out = File::options().create(true).append(true).open(log)?;
        let mut command = Command::new(binary);
        command
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        // SAFETY: prctl is async-signal-safe; the child dies with the driver's main thread
        // (which spawned it), so an interrupted benchmark leaves no function running.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let spawned_at = Instant::now();
        let child = command.spawn()?;
        let pid = libc::pid_t::try_from(child.id())
            .map_err(|_| BenchError::from("child pid out of range"))?;
        Ok(FunctionProcess {
            pid,
            reaped: false,
            spawned_at,
        })
    }

    /// Whether the process has exited (it stays a zombie, unreaped, for [`Self::kill`]).
    pub fn has_exited(&self) -> bool {
        // SAFETY: siginfo_t is plain data; WNOWAIT leaves the child reapable.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let found = libc::waitid(
                libc::P_PID,
                self.pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            );
            found == 0 && info.si_pid() == self.pid
        }
    }

    /// Kills the process and returns what `wait4` reports about its whole life.
    pub async fn kill(mut self) -> Result<Usage, BenchError> {
        let pid = self.pid;
        self.reaped = true;
        tokio::task::spawn_blocking(move || reap(pid))
            .await
            .map_err(|e| BenchError::from(format!("wait4 task: {e}")))?
    }
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = reap(self.pid);
        }
    }
}

/// From `wait4`'s `rusage`.
pub struct Usage {
    /// Peak resident set size, KiB.
    pub peak_rss_kib: u64,
    /// User + system CPU time.
    pub cpu: Duration,
}

fn reap(pid: libc::pid_t) -> Result<Usage, BenchError> {
    // SAFETY: plain syscalls on our own child; rusage is plain data.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut status = 0;
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::wait4(pid, &mut status, 0, &mut usage) != pid {
            return Err(format!("wait4({pid}): {}", std::io::Error::last_os_error()).into());
        }
        let cpu = |t: libc::timeval| {
            Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
                + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
        };
        Ok(Usage {
            // Linux reports ru_maxrss in KiB.
            peak_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
            cpu: cpu(usage.ru_utime) + cpu(usage.ru_stime),
        })
    }
}
