//! Child server processes that cannot outlive the test that started them, plus the small
//! helpers every server in the harness needs: a free port, a readiness poll, a retry when the
//! chosen port was taken before the server could bind it, and a per-machine cache of slow
//! one-time setup (database data directories).
//!
//! A [`ServerProcess`] is stopped when dropped (graceful signal, a grace period, then
//! `SIGKILL`, then reaped), which also happens while a panicking test unwinds. If the test
//! process itself dies without unwinding (`SIGKILL`, abort), the kernel kills the server
//! because every child is spawned with `PR_SET_PDEATHSIG(SIGKILL)`.
//!
//! Linux only, like the rest of the harness.

use libc::c_int;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// How long a stopping server gets to exit after its stop signal before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often process state and readiness are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How many log lines a startup failure message quotes.
const LOG_TAIL_LINES: usize = 40;
/// How many ports a start tries before giving up on "address already in use".
const PORT_ATTEMPTS: usize = 3;

/// The signal that asks a server to shut down cleanly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// `SIGTERM`: the usual polite request (MariaDB, moto).
    Terminate,
    /// `SIGINT`: PostgreSQL's "fast shutdown". Its `SIGTERM` ("smart shutdown") would wait
    /// for every client to disconnect, and a test may still hold a pool when it drops the
    /// server.
    Interrupt,
}

impl StopSignal {
    fn number(self) -> c_int {
        match self {
            StopSignal::Terminate => libc::SIGTERM,
            StopSignal::Interrupt => libc::SIGINT,
        }
    }
}

/// A running child process that is stopped and reaped when this guard is dropped.
///
/// Its stdout and stderr go to a log file; [`ServerProcess::log_tail`] quotes the end of it
/// for error messages.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    name: String,
    log_path: PathBuf,
    stop_signal: StopSignal,
    /// Set once the child has been reaped, so stopping twice is harmless.
    status: Option<ExitStatus>,
}

impl ServerProcess {
    /// Spawns `command` with stdin from `/dev/null` and stdout and stderr appended to
    /// `log_path` (created if missing).
    ///
    /// The child gets `PR_SET_PDEATHSIG(SIGKILL)` and its own process group (so a terminal's
    /// Ctrl-C reaches only the test, whose death then kills the server).
    pub fn spawn(
        command: Command,
        log_path: impl Into<PathBuf>,
        stop_signal: StopSignal,
    ) -> io::Result<ServerProcess> {
        ServerProcess::spawn_with_stdin(command, Stdio::null(), log_path.into(), stop_signal)
    }

    fn spawn_with_stdin(
        mut command: Command,
        stdin: Stdio,
        log_path: PathBuf,
        stop_signal: StopSignal,
    ) -> io::Result<ServerProcess> {
        let name = Path::new(command.get_program())
            .file_name()
            .map_or_else(|| "server".to_owned(), |n| n.to_string_lossy().into_owned());
        let log = File::options().create(true).append(true).open(&log_path)?;
        command
            .stdin(stdin)
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        die_with_test_process(&mut command);
        let child = spawn_from_long_lived_thread(command)?;
        Ok(ServerProcess {
            child,
            name,
            log_path,
            stop_signal,
            status: None,
        })
    }

    /// The process id (still valid until the guard is dropped: the child is not reaped before).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file the process's stdout and stderr go to.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last lines of the log, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path)
    }

    /// The exit status if the process has exited (and reaps it), `None` while it runs.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// Stops the process: the stop signal, up to 5 s to exit, then `SIGKILL` to its whole
    /// process group, then reaps it. Idempotent; [`Drop`] calls it.
    pub fn stop(&mut self) {
        if matches!(self.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = self.child.id() as i32;
        // The child is not reaped yet, so `pid` cannot have been reused by another process.
        // SAFETY: sending a signal cannot violate memory safety.
        unsafe { libc::kill(pid, self.stop_signal.number()) };
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if matches!(self.try_wait(), Ok(Some(_))) {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        // The negative pid addresses the process group: PostgreSQL's backends go too.
        // SAFETY: as above.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.child.kill();
        self.status = self.child.wait().ok();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A started server and the temporary directory it lives in (data, socket, log). The server
/// stops before the directory is removed. Every harness server derefs to one, so `pid()`,
/// `dir()` and `log_tail()` mean the same everywhere.
#[derive(Debug)]
pub struct ServerInstance {
    // Field order is drop order: stop the server before removing its files.
    server: ServerProcess,
    dir: tempfile::TempDir,
}

impl ServerInstance {
    pub(crate) fn new(server: ServerProcess, dir: tempfile::TempDir) -> Self {
        Self { server, dir }
    }

    /// The server's process id (gone once this is dropped).
    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// The server's temporary directory; removed once this is dropped.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The end of the server's log, for assertion messages.
    pub fn log_tail(&self) -> String {
        self.server.log_tail()
    }
}

/// Makes the kernel send `SIGKILL` to the child when the thread that spawned it exits.
///
/// The parent-death signal fires when the spawning *thread* exits, not the process, which is
/// why every spawn goes through [`spawn_from_long_lived_thread`]. `pre_exec` runs after
/// `Command::uid` has switched users, and that switch would otherwise clear the setting.
fn die_with_test_process(command: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec, where only async-signal-safe calls are
    // allowed: `prctl`, `getppid` and building an `io::Error` from an errno (no allocation).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The test process died before the prctl took effect: don't start an orphan.
            if std::os::unix::process::parent_id() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Spawns on one thread that lives as long as the test process, so the parent-death signal
/// means "the test process died" rather than "some worker thread exited" (tokio's blocking
/// pool and the test harness's per-test threads come and go).
fn spawn_from_long_lived_thread(command: Command) -> io::Result<Child> {
    type Request = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (sender, requests) = mpsc::channel::<Request>();
        thread::Builder::new()
            .name("harness-spawner".into())
            .spawn(move || {
                for (mut command, reply) in requests {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("start the harness's process-spawning thread");
        sender
    });
    let (reply, result) = mpsc::channel();
    spawner
        .send((command, reply))
        .map_err(|_| io::Error::other("the harness's spawning thread is gone"))?;
    result
        .recv()
        .map_err(|_| io::Error::other("the harness's spawning thread is gone"))?
}

/// Runs a one-shot command (a database's init tool, say) to completion, with the same
/// guarantees as a server: output to `log_path`, killed if the test dies or `timeout` passes.
/// `input` is a file to use as its stdin (`/dev/null` if `None`). An error names the command
/// and quotes the end of its log.
pub async fn run_to_completion(
    command: Command,
    input: Option<&Path>,
    log_path: &Path,
    timeout: Duration,
) -> Result<(), String> {
    let description = describe(&command);
    let stdin = match input {
        Some(path) => File::open(path)
            .map(Stdio::from)
            .map_err(|e| format!("open {} for {description}: {e}", path.display()))?,
        None => Stdio::null(),
    };
    let mut process =
        ServerProcess::spawn_with_stdin(command, stdin, log_path.into(), StopSignal::Terminate)
            .map_err(|e| format!("could not run {description}: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match process.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(format!(
                    "{description} failed ({status}); end of its output:\n{}",
                    process.log_tail()
                ));
            }
            Ok(None) if Instant::now() >= deadline => {
                return Err(format!(
                    "{description} did not finish within {timeout:?}; end of its output:\n{}",
                    process.log_tail()
                ));
            }
            Ok(None) => tokio::time::sleep(POLL_INTERVAL).await,
            Err(e) => return Err(format!("could not wait for {description}: {e}")),
        }
    }
}

fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    format!("`{text}`")
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// Another process can take it before the server binds it; [`start_with_port_retry`] covers
/// that.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0 to find a free port")
        .port()
}

/// Why a server did not become ready.
#[derive(Debug)]
pub enum StartError {
    /// The server exited because its port was already in use: worth retrying with another.
    PortInUse(String),
    /// Any other failure; the message quotes the end of the server's log.
    Failed(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::PortInUse(message) | StartError::Failed(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for StartError {}

/// Polls `probe` until it succeeds, the server exits, or `timeout` passes.
///
/// `probe` should do what a client does (connect, log in, make a request) and return a short
/// description of what went wrong; the last one ends up in the timeout message. An exit whose
/// log says "address already in use" becomes [`StartError::PortInUse`].
pub async fn wait_until_ready<Probe, Fut>(
    server: &mut ServerProcess,
    timeout: Duration,
    mut probe: Probe,
) -> Result<(), StartError>
where
    Probe: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    let mut last_problem;
    loop {
        match server.try_wait() {
            Ok(Some(status)) => {
                let tail = server.log_tail();
                let message = format!(
                    "{} exited during startup ({status}); end of {}:\n{tail}",
                    server.name,
                    server.log_path.display()
                );
                return Err(if tail.to_lowercase().contains("address already in use") {
                    StartError::PortInUse(message)
                } else {
                    StartError::Failed(message)
                });
            }
            Ok(None) => {}
            Err(e) => return Err(StartError::Failed(format!("wait for {}: {e}", server.name))),
        }
        // A probe against a server that accepted the connection but hangs must not hang us.
        match tokio::time::timeout(Duration::from_secs(5), probe()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(problem)) => last_problem = problem,
            Err(_) => last_problem = "the readiness probe timed out".into(),
        }
        if started.elapsed() >= timeout {
            return Err(StartError::Failed(format!(
                "{} was not ready within {timeout:?} (last probe: {last_problem}); end of {}:\n{}",
                server.name,
                server.log_path.display(),
                server.log_tail()
            )));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Runs `attempt` with a fresh free port, again (up to three times in all) while it fails
/// with [`StartError::PortInUse`], and panics with the error otherwise. `what` names the
/// server in the panic message.
///
/// (Closures returning futures rather than async closures, here and in
/// [`wait_until_ready`]: today's compiler cannot prove futures from borrowing async closures
/// `Send`, and tests spawn server starts onto tasks.)
pub async fn start_with_port_retry<T, Attempt, Fut>(what: &str, mut attempt: Attempt) -> T
where
    Attempt: FnMut(u16) -> Fut,
    Fut: Future<Output = Result<T, StartError>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt(free_port()).await {
            Ok(started) => return started,
            Err(StartError::PortInUse(_)) if tries < PORT_ATTEMPTS => continue,
            Err(error) => panic!("{what} did not start: {error}"),
        }
    }
}

/// Whether a process with this id exists and has not exited (a zombie waiting to be reaped
/// counts as exited). For tests that check a server is really gone.
pub fn process_is_running(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "<pid> (<command, may contain spaces and parentheses>) <state> ..."
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, None | Some("Z" | "X"))
}

/// The last lines of a log file, or a note saying it could not be read.
pub fn log_tail(path: &Path) -> String {
    let mut text = String::new();
    if let Err(e) = File::open(path).and_then(|mut f| f.read_to_string(&mut text)) {
        return format!("(could not read {}: {e})", path.display());
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// Returns the first of `candidates` that is an existing file, or panics naming the missing
/// tool and the setup script that installs it. `what` is the tool's name.
pub fn require_binary(what: &str, candidates: &[PathBuf]) -> PathBuf {
    if let Some(found) = candidates.iter().find(|path| path.is_file()) {
        return found.clone();
    }
    let looked_in: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    panic!(
        "{what} is missing (looked for {}): run scripts/setup to install it",
        looked_in.join(", ")
    );
}

/// `name` in each directory of `PATH`, then in `extra_dirs`: the candidates for
/// [`require_binary`].
pub fn binary_candidates(name: &str, extra_dirs: &[&str]) -> Vec<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra_dirs.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .collect()
}

/// The workspace root (the directory holding `.venv/` and `scripts/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
        .to_path_buf()
}

/// A random lowercase hex string of `2 * bytes` characters from `/dev/urandom`, for
/// passwords and unique names.
pub fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buffer))
        .expect("read /dev/urandom");
    buffer.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether the test runs as root (servers that refuse root need another user then).
pub fn running_as_root() -> bool {
    // SAFETY: geteuid always succeeds and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// Where the harness puts instance directories and its template cache: `$TMPDIR` if set;
/// otherwise `/dev/shm` when it has at least 2 GiB free, because a database data directory
/// has about a thousand files and creating them on a busy disk-backed `/tmp` takes up to a
/// second, against about 0.1 s in RAM; otherwise `/tmp`.
pub fn scratch_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        const ROOMY: u64 = 2 << 30;
        let shm = Path::new("/dev/shm");
        if std::env::var_os("TMPDIR").is_none() && available_bytes(shm).is_some_and(|n| n >= ROOMY)
        {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        }
    })
}

/// Free space for unprivileged users on the file system holding `path`.
fn available_bytes(path: &Path) -> Option<u64> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: an all-zero `statvfs` is a valid value of this plain C struct.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a properly typed output buffer.
    let result = unsafe { libc::statvfs(c_path.as_ptr(), &mut stats) };
    (result == 0).then(|| (stats.f_bavail as u64).saturating_mul(stats.f_frsize as u64))
}

/// Marks a harness directory with the pid of the test process that owns it.
const OWNER_FILE: &str = ".harness-owner";

/// A temporary directory (removed on drop) in [`scratch_root`], named `<prefix>XXXXXX`;
/// `prefix` must start with `harness-`.
///
/// A test process killed outright (no unwinding) cannot remove its directories, and in
/// `/dev/shm` they would hold RAM until reboot, so each directory records its owner's pid and
/// the first call in every process removes those whose owner is gone
/// ([`remove_abandoned_dirs`]).
pub(crate) fn temp_dir(prefix: &str) -> tempfile::TempDir {
    debug_assert!(prefix.starts_with("harness-"));
    static SWEPT: OnceLock<()> = OnceLock::new();
    SWEPT.get_or_init(remove_abandoned_dirs);
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(scratch_root())
        .expect("create a temporary directory");
    fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string())
        .expect("mark the temporary directory's owner");
    dir
}

/// Removes the harness directories in [`scratch_root`] whose owning test process no longer
/// runs. Runs once per process by itself; public for the test that checks it.
pub fn remove_abandoned_dirs() {
    let Ok(entries) = fs::read_dir(scratch_root()) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with("harness-") {
            continue;
        }
        // No owner file yet: being created right now, or not ours. Leave it.
        let Ok(owner) = fs::read_to_string(entry.path().join(OWNER_FILE)) else {
            continue;
        };
        if owner
            .trim()
            .parse()
            .is_ok_and(|pid| !process_is_running(pid))
        {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Changes the owner of `path` (not recursively) when `owner` is set.
pub(crate) fn chown(path: &Path, owner: Option<(u32, u32)>) -> io::Result<()> {
    match owner {
        Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid)),
        None => Ok(()),
    }
}

/// Copies the directory tree `from` to `to` (which must not exist), keeping permissions and
/// giving everything to `owner` when set. Only directories and regular files are expected.
pub(crate) fn copy_tree(from: &Path, to: &Path, owner: Option<(u32, u32)>) -> io::Result<()> {
    fs::create_dir(to)?;
    fs::set_permissions(to, fs::metadata(from)?.permissions())?;
    chown(to, owner)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target, owner)?;
        } else {
            copy_file(&entry.path(), &target, owner)?;
        }
    }
    Ok(())
}

/// Copies one file to a new path with the same permission bits. Not `fs::copy`: its
/// `O_TRUNC` makes ext4 flush each file on close, which costs about a millisecond per file
/// (a PostgreSQL data directory has a thousand).
fn copy_file(from: &Path, to: &Path, owner: Option<(u32, u32)>) -> io::Result<()> {
    let mut source = File::open(from)?;
    let mut target = File::create_new(to)?;
    io::copy(&mut source, &mut target)?; // copy_file_range under the hood
    target.set_permissions(source.metadata()?.permissions())?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&target, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// A directory built once per machine and reused by every later test and test process:
/// `<scratch root>/orchestrator-harness-cache-<euid>/<key>` (see [`scratch_root`]).
///
/// `key` must change whenever the content would (callers put the tool's version and a format
/// number in it). On a miss, `build` fills a fresh staging directory, which is then renamed
/// into place; a lock file makes concurrent test processes wait for one build instead of
/// racing. Panics with `build`'s error.
pub(crate) async fn cached_dir<Build, Fut>(key: &str, build: Build) -> PathBuf
where
    Build: FnOnce(PathBuf) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let base = scratch_root().join(
        // SAFETY: as in running_as_root.
        format!("orchestrator-harness-cache-{}", unsafe { libc::geteuid() }),
    );
    let ready = base.join(key);
    if ready.is_dir() {
        return ready;
    }
    fs::create_dir_all(&base).expect("create the harness cache directory");
    // Other users (PostgreSQL's when running as root) need to reach their staging dirs.
    fs::set_permissions(&base, fs::Permissions::from_mode(0o755))
        .expect("set the harness cache directory's permissions");
    let lock = File::create(base.join(format!("{key}.lock"))).expect("create the cache lock");
    loop {
        match lock.try_lock() {
            Ok(()) => break,
            Err(fs::TryLockError::WouldBlock) => tokio::time::sleep(POLL_INTERVAL).await,
            Err(fs::TryLockError::Error(e)) => panic!("lock the harness cache: {e}"),
        }
    }
    if ready.is_dir() {
        return ready; // another process built it while we waited
    }
    let staging = base.join(format!("{key}.building"));
    // We hold the lock, so a leftover staging dir is from a build that died.
    if staging.exists() {
        fs::remove_dir_all(&staging).expect("remove a stale staging directory");
    }
    if let Err(error) = build(staging.clone()).await {
        let _ = fs::remove_dir_all(&staging);
        panic!("{error}");
    }
    fs::rename(&staging, &ready).expect("move the built template into the cache");
    ready
}

/// A cheap identity for an installed binary (size and modification time), for cache keys:
/// upgrading the package changes it.
pub(crate) fn binary_fingerprint(path: &Path) -> String {
    let metadata = fs::metadata(path).expect("read the binary's metadata");
    format!("{:x}-{:x}", metadata.len(), metadata.mtime())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = temp_dir("harness-unit-");
        let path = dir.path().join("log");
        let text: Vec<String> = (0..100).map(|n| format!("line {n}")).collect();
        fs::write(&path, text.join("\n")).unwrap();
        let tail = log_tail(&path);
        assert!(tail.starts_with("line 60\n"), "{tail}");
        assert!(tail.ends_with("line 99"), "{tail}");
    }

    #[test]
    #[should_panic(
        expected = "frobnicator is missing (looked for /nonexistent/frob): run scripts/setup"
    )]
    fn a_missing_binary_names_itself_and_the_setup_script() {
        require_binary("frobnicator", &[PathBuf::from("/nonexistent/frob")]);
    }

    #[test]
    fn this_process_is_running_and_a_reaped_one_is_not() {
        assert!(process_is_running(std::process::id()));
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!process_is_running(pid));
    }

    #[test]
    fn statvfs_reports_free_space() {
        let free = available_bytes(Path::new("/")).expect("statvfs /");
        assert!(free > 0);
    }

    #[test]
    fn random_hex_is_random_hex() {
        let a = random_hex(16);
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, random_hex(16));
    }
}
