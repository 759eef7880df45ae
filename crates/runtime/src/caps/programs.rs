//! Programs and processes: run a granted program (output back, or streamed into or out of an
//! item), or spawn one to talk to line by line. Each is killed at its timeout.

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use wasmtime::component::Resource;

use super::{timeout_of, Caps, R};
use crate::bindings::wit_host::{self, Command, CommandOutput};
use crate::process::Process;
use crate::runtime::State;

const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(600);

impl Caps {
    pub(super) fn command(&self, cmd: &Command) -> R<std::process::Command> {
        self.check_program(&cmd.program)?;
        let cwd = match &cmd.cwd {
            Some(c) => self.resolve(c)?,
            None => self.dir.clone(),
        };
        let mut c = std::process::Command::new(&cmd.program);
        c.args(&cmd.args).env_clear().current_dir(cwd);
        if let Some(path) = std::env::var_os("PATH") {
            c.env("PATH", path);
        }
        for kv in &cmd.env {
            c.env(&kv.key, &kv.value);
        }
        Ok(c)
    }

    pub(super) fn run(&mut self, cmd: Command) -> R<CommandOutput> {
        let c = self.command(&cmd)?;
        run_with(c, &cmd, None, None)
    }

    pub(super) fn run_to_item(&mut self, cmd: Command, item: String) -> R<CommandOutput> {
        let c = self.command(&cmd)?;
        let session = self.session()?;
        let mut drain = |r: &mut dyn Read| {
            session
                .add_reader(Path::new(&item), r)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        run_with(c, &cmd, None, Some(&mut drain))
    }

    pub(super) fn run_from_item(&mut self, cmd: Command, item: String) -> R<CommandOutput> {
        let c = self.command(&cmd)?;
        let reader = self.item_reader(&item)?;
        run_with(c, &cmd, Some(Box::new(reader)), None)
    }

    /// Starts a granted program to talk to; the caller keeps it in the call's resource table.
    pub(super) fn spawn(&mut self, cmd: Command) -> R<Process> {
        let c = self.command(&cmd)?;
        Process::spawn(
            c,
            &cmd.program,
            timeout_of(cmd.timeout_ms, DEFAULT_RUN_TIMEOUT),
        )
    }
}

/// Kills a child if it outlives its timeout; send on (or drop) the returned sender once it has
/// been waited for.
pub(crate) fn watchdog(pid: u32, timeout: Duration) -> crossbeam_channel::Sender<()> {
    let (tx, rx) = crossbeam_channel::bounded::<()>(1);
    std::thread::spawn(move || {
        if let Err(crossbeam_channel::RecvTimeoutError::Timeout) = rx.recv_timeout(timeout) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    });
    tx
}

/// Consumes a program's stdout.
type Drain<'a> = dyn FnMut(&mut dyn Read) -> R<()> + 'a;

/// Runs a command; `feed` writes its stdin, `drain` consumes its stdout (else it is collected).
pub(super) fn run_with(
    mut c: std::process::Command,
    cmd: &Command,
    feed: Option<Box<dyn Read + Send>>,
    drain: Option<&mut Drain>,
) -> R<CommandOutput> {
    c.stdin(if feed.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", cmd.program))?;
    let dog = watchdog(child.id(), timeout_of(cmd.timeout_ms, DEFAULT_RUN_TIMEOUT));
    let stdin = child.stdin.take();
    let feeder = feed.map(|mut r| {
        std::thread::spawn(move || {
            let mut w = stdin.expect("piped");
            let _ = std::io::copy(&mut r, &mut w);
        })
    });
    let mut stderr = child.stderr.take().expect("piped");
    let err_thread = std::thread::spawn(move || {
        let mut v = vec![];
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let mut stdout_pipe = child.stdout.take().expect("piped");
    let mut stdout = vec![];
    let drained = match drain {
        Some(f) => f(&mut stdout_pipe),
        None => stdout_pipe
            .read_to_end(&mut stdout)
            .map(|_| ())
            .map_err(|e| e.to_string()),
    };
    drop(stdout_pipe);
    if drained.is_err() {
        // Nobody reads its output any more: do not wait for the timeout.
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    let _ = dog.send(());
    if let Some(f) = feeder {
        let _ = f.join();
    }
    let stderr = err_thread.join().unwrap_or_default();
    drained?;
    exit_output(&cmd.program, status, stdout, stderr)
}

/// How a waited-for program ended, as the plugin sees it: its exit code and output, or an error
/// when a signal (its timeout's watchdog, or another) ended it.
pub(crate) fn exit_output(
    program: &str,
    status: std::process::ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
) -> R<CommandOutput> {
    match status.code() {
        Some(code) => Ok(CommandOutput {
            status: code,
            stdout,
            stderr,
        }),
        None => Err(format!(
            "{program} was killed (timeout or signal): {}",
            String::from_utf8_lossy(&stderr).trim()
        )),
    }
}

impl wit_host::HostProcess for State {
    fn write(&mut self, p: Resource<Process>, data: Vec<u8>) -> R<()> {
        self.process(&p)?.write(&data)
    }

    fn read_line(&mut self, p: Resource<Process>, timeout_ms: u32) -> R<Option<String>> {
        self.process(&p)?.read_line(timeout_ms)
    }

    fn finish(&mut self, p: Resource<Process>) -> R<CommandOutput> {
        self.process(&p)?.finish()
    }

    fn drop(&mut self, p: Resource<Process>) -> wasmtime::Result<()> {
        self.table.delete(p)?; // its Drop kills the program if it still runs
        Ok(())
    }
}

impl State {
    fn process(&mut self, p: &Resource<Process>) -> R<&mut Process> {
        self.table.get_mut(p).map_err(|e| e.to_string())
    }
}
