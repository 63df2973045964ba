//! containerd's `Task` service for one container, at the level the runtime or the container's
//! annotation picks (`crate::Level`):
//! - `wasm`: the entrypoint is a WebAssembly module, run by paddock's wasm driver
//!   (`paddock::driver::wasm`) inside this shim process: one engine, the module compiled once
//!   per content and cached on disk, the memory limit from the spec enforced by the store's
//!   limiter, stdout/stderr straight into containerd's FIFOs;
//! - `sandbox`: an ordinary process of the image under paddock's sandbox, a child of this
//!   shim (`crate::sandboxed`).

use crate::events::Publisher;
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExit, TaskIO, TaskOOM, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::shim::shim::*;
use containerd_shim_protos::topics;
use containerd_shim_protos::types::task::{ProcessInfo, Status};
use paddock::driver::wasm::{HostOptions, Instance, Program, Stdio, WasmHost};
use paddock::logs::{Sink, Stream};
use paddock::supervise::Exit;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use ttrpc::{Code, TtrpcContext};

/// Compiled modules are kept here (by content hash) across containers and shims, unless
/// `PADDOCK_SHIM_WASM_CACHE` says otherwise.
const DEFAULT_CACHE: &str = "/var/lib/paddock/containerd-wasm-cache";

type Res<T> = ttrpc::Result<T>;

fn err(code: Code, msg: impl ToString) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg))
}

/// Set once, waited for by `main` (the daemon exits after `Shutdown`).
#[derive(Default)]
pub struct Done(Mutex<bool>, Condvar);

impl Done {
    fn set(&self) {
        if let Ok(mut d) = self.0.lock() {
            *d = true;
        }
        self.1.notify_all();
    }
    pub fn wait(&self) {
        let Ok(mut d) = self.0.lock() else { return };
        while !*d {
            d = match self.1.wait(d) {
                Ok(d) => d,
                Err(_) => return,
            };
        }
    }
}

struct Container {
    id: String,
    bundle: PathBuf,
    /// We mounted the rootfs here (unmounted at delete).
    mounted: Option<PathBuf>,
    stdin: String,
    stdout: String,
    stderr: String,
    status: Status,
    /// Exit status and time, once stopped.
    exit: Option<(u32, Timestamp)>,
    /// The module; `None` for a pod's sandbox ("pause") container, which runs nothing: it
    /// stays RUNNING until it is killed (the pod's namespaces are the CRI plugin's own).
    program: Option<Arc<Program>>,
    /// The guest's output, until `start` hands it over; then the writer threads.
    sinks: Option<(Sink, Sink)>,
    writers: Vec<std::thread::JoinHandle<()>>,
    instance: Option<Instance>,
    /// The signal `kill` stopped it with.
    killed_by: Option<u32>,
    /// Level `sandbox`: the prepared process, and its pid once started.
    sandboxed: Option<crate::sandboxed::Sandboxed>,
    pid: Option<libc::pid_t>,
}

struct Inner {
    publisher: Publisher,
    container: Mutex<Option<Container>>,
    changed: Condvar,
    host: Mutex<Option<WasmHost>>,
    done: Arc<Done>,
    /// The runtime's level (the binary's name), unless a container's annotation says otherwise.
    level: crate::Level,
    namespace: String,
}

#[derive(Clone)]
pub struct Service(Arc<Inner>);

fn pid() -> u32 {
    std::process::id()
}

impl Service {
    pub fn new(publisher: Publisher, level: crate::Level, namespace: &str) -> Service {
        Service(Arc::new(Inner {
            level,
            namespace: namespace.to_string(),
            publisher,
            container: Mutex::new(None),
            changed: Condvar::new(),
            host: Mutex::new(None),
            done: Arc::new(Done::default()),
        }))
    }

    pub fn done(&self) -> Arc<Done> {
        self.0.done.clone()
    }

    fn lock(&self) -> Res<MutexGuard<'_, Option<Container>>> {
        self.0
            .container
            .lock()
            .map_err(|_| err(Code::INTERNAL, "shim state lock poisoned"))
    }

    fn check_id(c: &Container, id: &str, exec_id: &str) -> Res<()> {
        if !exec_id.is_empty() {
            return Err(err(
                Code::NOT_FOUND,
                format!("exec process {exec_id}: the paddock runtime has no exec"),
            ));
        }
        if !id.is_empty() && id != c.id {
            return Err(err(
                Code::NOT_FOUND,
                format!("container {id}: this shim runs {}", c.id),
            ));
        }
        Ok(())
    }

    /// The wasm host of this shim, created at the first container.
    fn host(&self) -> Result<MutexGuard<'_, Option<WasmHost>>, String> {
        let mut h = self.0.host.lock().map_err(|_| "wasm host lock poisoned")?;
        if h.is_none() {
            let cache = std::env::var_os("PADDOCK_SHIM_WASM_CACHE")
                .map_or_else(|| PathBuf::from(DEFAULT_CACHE), PathBuf::from);
            let me = self.clone();
            let opts = HostOptions {
                cache_dir: Some(cache),
                // The container's instance, and room for health calls.
                slots: 4,
                workers: 1,
            };
            let host = WasmHost::new(opts, Arc::new(move |_, _, exit| me.exited(exit)))?;
            *h = Some(host);
        }
        Ok(h)
    }

    fn publish_start(&self, id: String, task_pid: u32) {
        self.0.publisher.publish(
            topics::TASK_START_EVENT_TOPIC,
            &TaskStart {
                container_id: id,
                pid: task_pid,
                ..Default::default()
            },
        );
    }

    /// The instance ended (on a wasm worker thread): wait for its output to reach containerd,
    /// then record the exit and tell containerd.
    fn exited(&self, exit: Exit) {
        let me = self.clone();
        let _ = std::thread::Builder::new()
            .name("paddock-shim-exit".into())
            .spawn(move || me.record_exit(exit));
    }

    fn record_exit(&self, exit: Exit) {
        let writers = match self.lock() {
            Ok(mut g) => g
                .as_mut()
                .map(|c| std::mem::take(&mut c.writers))
                .unwrap_or_default(),
            Err(_) => vec![],
        };
        // The guest's sinks are dropped with its store: the writers drain and close the FIFOs.
        for w in writers {
            let _ = w.join();
        }
        let Ok(mut g) = self.lock() else { return };
        let Some(c) = g.as_mut() else { return };
        let (code, oom) = exit_status(&exit, c.killed_by);
        drop(g);
        self.finished(code, oom, pid());
    }

    /// Records the end of the container's process and tells containerd (`/tasks/oom` first
    /// when it was an out-of-memory kill).
    fn finished(&self, code: u32, oom: bool, task_pid: u32) {
        let Ok(mut g) = self.lock() else { return };
        let Some(c) = g.as_mut() else { return };
        let at = crate::now();
        c.status = Status::STOPPED;
        c.exit = Some((code, at.clone()));
        c.instance = None;
        c.pid = None;
        let id = c.id.clone();
        drop(g);
        self.0.changed.notify_all();
        if oom {
            self.0.publisher.publish(
                topics::TASK_OOM_EVENT_TOPIC,
                &TaskOOM {
                    container_id: id.clone(),
                    ..Default::default()
                },
            );
        }
        self.0.publisher.publish(
            topics::TASK_EXIT_EVENT_TOPIC,
            &TaskExit {
                container_id: id.clone(),
                id,
                pid: task_pid,
                exit_status: code,
                exited_at: Some(at).into(),
                ..Default::default()
            },
        );
    }

    /// The waiter of a sandboxed container's process (its own thread): reaps it, empties its
    /// cgroup, reads the OOM counter, and records the exit.
    fn wait_sandboxed(&self, child: libc::pid_t) {
        crate::sandboxed::exited(child);
        let (killed_by, oom) = match self.lock() {
            Ok(mut g) => match g.as_mut() {
                Some(c) => {
                    // No kill may reach the pid once it is reaped (below): its number could
                    // be reused.
                    c.pid = None;
                    (c.killed_by, c.sandboxed.as_mut().is_some_and(|s| s.ended()))
                }
                None => (None, false),
            },
            Err(_) => (None, false),
        };
        let status = crate::sandboxed::reap(child);
        let (code, oom) = crate::sandboxed::exit_status(status, killed_by, oom);
        self.finished(code, oom, child as u32);
    }

    fn create_container(&self, req: &CreateTaskRequest) -> Result<Container, String> {
        if req.terminal {
            return Err(
                "a terminal (-t) is not supported by the paddock runtime: run without -t".into(),
            );
        }
        let bundle = PathBuf::from(&req.bundle);
        let spec = crate::spec::load(&bundle)?;
        let level = match &spec.level {
            Some(l) => crate::Level::parse(l).map_err(|e| {
                format!(
                    "annotations[\"{}\"] = \"{l}\": {e}",
                    crate::spec::LEVEL_ANNOTATION
                )
            })?,
            None => self.0.level,
        };
        let mut mounted = None;
        if !req.rootfs.is_empty() {
            let target = bundle.join("rootfs");
            crate::mount::mount_rootfs(&req.rootfs, &target)?;
            mounted = Some(target);
        }
        let mut sandboxed = None;
        let result = if spec.pod_sandbox {
            Ok((None, None, vec![]))
        } else if level == crate::Level::Sandbox {
            crate::sandboxed::Sandboxed::prepare(
                &self.0.namespace,
                &req.id,
                &bundle,
                &spec,
                &req.stdout,
                &req.stderr,
            )
            .map(|s| {
                eprintln!(
                    "containerd-shim-paddock-v1: container {}: level sandbox ({})",
                    req.id, s.summary
                );
                sandboxed = Some(s);
                (None, None, vec![])
            })
        } else {
            self.prepare(req, &spec)
                .map(|(p, s, w)| (Some(p), Some(s), w))
        };
        match result {
            Ok((program, sinks, writers)) => Ok(Container {
                id: req.id.clone(),
                bundle,
                mounted,
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                status: Status::CREATED,
                exit: None,
                program,
                sinks,
                writers,
                instance: None,
                killed_by: None,
                sandboxed,
                pid: None,
            }),
            Err(e) => {
                if let Some(m) = &mounted {
                    crate::mount::unmount_rootfs(m);
                }
                Err(e)
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn prepare(
        &self,
        req: &CreateTaskRequest,
        spec: &crate::spec::Spec,
    ) -> Result<(Arc<Program>, (Sink, Sink), Vec<std::thread::JoinHandle<()>>), String> {
        let (module, args) = resolve_module(&spec.root, &spec.cwd, &spec.args)?;
        let app = app_toml(spec, &module, args)?;
        let file = PathBuf::from(&req.bundle).join("config.json");
        let app = paddock::config::parse_app(&req.id, &file, &app).map_err(|errs| {
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        let program = {
            let host = self.host()?;
            let host = host.as_ref().ok_or("no wasm host")?;
            host.program(&app)
                .map_err(|e| format!("{}: {e}", module.display()))?
        };
        let name: Arc<str> = Arc::from(req.id.as_str());
        let (out, out_rx) = Sink::channel(name.clone(), Stream::Out);
        let (err_sink, err_rx) = Sink::channel(name, Stream::Err);
        let writers = vec![
            spawn_writer(req.stdout.clone(), out_rx)?,
            spawn_writer(req.stderr.clone(), err_rx)?,
        ];
        Ok((program, (out, err_sink), writers))
    }
}

fn is_module(path: &Path) -> std::io::Result<bool> {
    let mut magic = [0u8; 4];
    let mut f = std::fs::File::open(path)?;
    use std::io::Read;
    Ok(f.read_exact(&mut magic).is_ok() && &magic == b"\0asm")
}

/// The module to run and its arguments: `process.args[0]` inside the rootfs (relative to
/// `process.cwd` when relative) if it is a module there; otherwise the image's one wasm layer
/// (`layer::DIR`), with `process.args[1..]`.
fn resolve_module<'a>(
    root: &Path,
    cwd: &str,
    args: &'a [String],
) -> Result<(PathBuf, &'a [String]), String> {
    let layers: Vec<PathBuf> = std::fs::read_dir(root.join(crate::layer::DIR))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    let Some(arg0) = args.first() else {
        return match layers.as_slice() {
            [one] => Ok((one.clone(), args)),
            [] => Err("process.args is empty and the image has no wasm layer: give the image an entrypoint (the .wasm file), or pass it to `ctr run`".into()),
            _ => Err(format!("process.args is empty and the image has {} wasm layers: the paddock runtime runs one module per container", layers.len())),
        };
    };
    let module = module_in_rootfs(root, cwd, arg0);
    match (module, layers.as_slice()) {
        (Ok(p), _) => Ok((p, &args[1..])),
        (Err(_), [one]) => Ok((one.clone(), &args[1..])),
        (Err(e), []) => Err(e),
        (Err(e), _) => Err(format!(
            "{e}; and the image has {} wasm layers (one module per container)",
            layers.len()
        )),
    }
}

/// `arg0` inside the rootfs, checked to be a wasm module.
fn module_in_rootfs(root: &Path, cwd: &str, arg0: &str) -> Result<PathBuf, String> {
    let inside = if arg0.starts_with('/') {
        PathBuf::from(arg0)
    } else {
        Path::new(cwd).join(arg0)
    };
    let rel = inside.strip_prefix("/").unwrap_or(&inside);
    if rel
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(format!(
            "process.args[0] = \"{arg0}\" leaves the container's root (\"..\")"
        ));
    }
    let path = root.join(rel);
    match is_module(&path) {
        Ok(true) => Ok(path),
        Ok(false) => Err(format!(
            "process.args[0] = \"{arg0}\" is not a WebAssembly module (no \\0asm header): the paddock runtime runs images whose entrypoint is a .wasm file; use runc for other images"
        )),
        Err(e) => Err(format!(
            "process.args[0] = \"{arg0}\": cannot read {} in the image: {e}",
            path.display()
        )),
    }
}

/// The container as a paddock app file: the same validation as any wasm app.
fn app_toml(spec: &crate::spec::Spec, module: &Path, args: &[String]) -> Result<String, String> {
    use toml::Value;
    let mut t = toml::Table::new();
    t.insert("isolation".into(), Value::String("wasm".into()));
    t.insert(
        "module".into(),
        Value::String(module.to_string_lossy().into_owned()),
    );
    t.insert(
        "args".into(),
        Value::Array(args.iter().cloned().map(Value::String).collect()),
    );
    t.insert("env".into(), Value::Table(spec.env_table()));
    if let Some(limit) = spec.memory_limit {
        // A wasm32 memory cannot grow past 4 GiB: a larger limit is no limit.
        let limit = limit.min(paddock::config::wasm::MAX_WASM_MEMORY);
        let mut l = toml::Table::new();
        l.insert("memory".into(), Value::String(format!("{limit}B")));
        t.insert("limits".into(), Value::Table(l));
    }
    // The image's root is the guest's "/" (read-only when the spec says so).
    let mut pre = toml::Table::new();
    pre.insert(
        "/".into(),
        Value::String(format!(
            "{}{}",
            spec.root.display(),
            if spec.readonly { "" } else { ":rw" }
        )),
    );
    let mut w = toml::Table::new();
    w.insert("preopens".into(), Value::Table(pre));
    t.insert("wasm".into(), Value::Table(w));
    toml::to_string(&t).map_err(|e| format!("cannot express the spec as an app: {e}"))
}

/// A thread that writes a guest stream to containerd's FIFO (or file) until the guest's sink is
/// dropped. An empty path discards the output.
fn spawn_writer(
    path: String,
    mut rx: tokio::sync::mpsc::Receiver<paddock::logs::Data>,
) -> Result<std::thread::JoinHandle<()>, String> {
    std::thread::Builder::new()
        .name("paddock-shim-io".into())
        .spawn(move || {
            use std::io::Write;
            let path = path.strip_prefix("file://").unwrap_or(&path).to_string();
            let mut file = if path.is_empty() {
                None
            } else {
                match open_output(&path) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        eprintln!("containerd-shim-paddock-v1: cannot open {path}: {e}; the output is discarded");
                        None
                    }
                }
            };
            while let Some(d) = rx.blocking_recv() {
                if let Some(f) = &mut file
                    && f.write_all(&d.into_bytes()).is_err()
                {
                    file = None; // the reader went away: discard the rest
                }
            }
        })
        .map_err(|e| format!("cannot start an output thread: {e}"))
}

/// Opens containerd's FIFO (or log file) for writing. containerd opens the reading end before
/// `Create`; should no reader come within 10 s the output is discarded rather than holding the
/// guest's exit forever (a blocking open of a FIFO without a reader never returns).
pub(crate) fn open_output(path: &str) -> std::io::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let f = loop {
        match std::fs::OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => break f,
            Err(e)
                if e.raw_os_error() == Some(libc::ENXIO)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    };
    // SAFETY: F_GETFL/F_SETFL on the descriptor `f` owns: writes block again (backpressure).
    unsafe {
        let fl = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        if fl >= 0 {
            libc::fcntl(f.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
    }
    Ok(f)
}

/// containerd's exit status for a paddock exit, and whether it was an out-of-memory end.
fn exit_status(exit: &Exit, killed_by: Option<u32>) -> (u32, bool) {
    match exit {
        Exit::Code(c) => ((*c as u32) & 0xff, false),
        Exit::Signal(s) => (128 + *s as u32, false),
        Exit::Interrupted => (128 + killed_by.unwrap_or(libc::SIGKILL as u32), false),
        Exit::OomKilled => (128 + libc::SIGKILL as u32, true),
        // The limiter refused a memory growth and the guest trapped on it (a Rust guest
        // aborts): an out-of-memory kill, reported as a runc container's would be (137 + oom).
        Exit::Trap(msg) if msg.contains("memory growth to") => (128 + libc::SIGKILL as u32, true),
        // A trap is the guest's crash: as a process that aborted.
        Exit::Trap(_) => (128 + libc::SIGABRT as u32, false),
        Exit::SpawnFailed(_) => (127, false),
        Exit::Failed(_) | Exit::Unknown => (255, false),
    }
}

impl containerd_shim_protos::Task for Service {
    fn create(&self, _: &TtrpcContext, req: CreateTaskRequest) -> Res<CreateTaskResponse> {
        let mut g = self.lock()?;
        if let Some(c) = g.as_ref() {
            return Err(err(
                Code::ALREADY_EXISTS,
                format!(
                    "this shim already runs container {} (one container per paddock shim)",
                    c.id
                ),
            ));
        }
        let c = self
            .create_container(&req)
            .map_err(|e| err(Code::INVALID_ARGUMENT, e))?;
        *g = Some(c);
        drop(g);
        self.0.publisher.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            &TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: Some(TaskIO {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                    ..Default::default()
                })
                .into(),
                pid: pid(),
                ..Default::default()
            },
        );
        Ok(CreateTaskResponse {
            pid: pid(),
            ..Default::default()
        })
    }

    fn start(&self, _: &TtrpcContext, req: StartRequest) -> Res<StartResponse> {
        let mut g = self.lock()?;
        let c = g
            .as_mut()
            .ok_or_else(|| err(Code::NOT_FOUND, "no container created"))?;
        Self::check_id(c, &req.id, &req.exec_id)?;
        if c.status != Status::CREATED {
            return Err(err(
                Code::FAILED_PRECONDITION,
                format!("container {} is not in the created state", c.id),
            ));
        }
        if let Some(sb) = &mut c.sandboxed {
            let child = sb.start().map_err(|e| err(Code::UNKNOWN, e))?;
            c.pid = Some(child);
            c.status = Status::RUNNING;
            let id = c.id.clone();
            drop(g);
            let me = self.clone();
            std::thread::Builder::new()
                .name("paddock-shim-wait".into())
                .spawn(move || me.wait_sandboxed(child))
                .map_err(|e| err(Code::INTERNAL, format!("cannot start the waiter: {e}")))?;
            self.publish_start(id, child as u32);
            return Ok(StartResponse {
                pid: child as u32,
                ..Default::default()
            });
        }
        let Some(program) = c.program.clone() else {
            // A pod sandbox container: nothing to run.
            c.status = Status::RUNNING;
            let id = c.id.clone();
            drop(g);
            self.publish_start(id, pid());
            return Ok(StartResponse {
                pid: pid(),
                ..Default::default()
            });
        };
        let (out, er) = c
            .sinks
            .take()
            .ok_or_else(|| err(Code::INTERNAL, "output already taken"))?;
        let stdio = Stdio {
            stdout: Some(out),
            stderr: Some(er),
        };
        let started = {
            let host = self.host().map_err(|e| err(Code::INTERNAL, e))?;
            match host.as_ref() {
                Some(h) => h.start(&program, 0, 0, stdio),
                None => Err("no wasm host".into()),
            }
        };
        let instance = started.map_err(|e| err(Code::UNKNOWN, e))?;
        c.instance = Some(instance);
        c.status = Status::RUNNING;
        let id = c.id.clone();
        drop(g);
        self.publish_start(id, pid());
        Ok(StartResponse {
            pid: pid(),
            ..Default::default()
        })
    }

    fn state(&self, _: &TtrpcContext, req: StateRequest) -> Res<StateResponse> {
        let g = self.lock()?;
        let c = g
            .as_ref()
            .ok_or_else(|| err(Code::NOT_FOUND, format!("container {}", req.id)))?;
        Self::check_id(c, &req.id, &req.exec_id)?;
        let (exit_status, exited_at) = c.exit.clone().unwrap_or((0, Timestamp::new()));
        Ok(StateResponse {
            id: c.id.clone(),
            bundle: c.bundle.to_string_lossy().into_owned(),
            pid: c.pid.map_or(pid(), |p| p as u32),
            status: c.status.into(),
            stdin: c.stdin.clone(),
            stdout: c.stdout.clone(),
            stderr: c.stderr.clone(),
            terminal: false,
            exit_status,
            exited_at: c.exit.as_ref().map(|_| exited_at).into(),
            ..Default::default()
        })
    }

    fn kill(&self, _: &TtrpcContext, req: KillRequest) -> Res<Empty> {
        let mut g = self.lock()?;
        let c = g
            .as_mut()
            .ok_or_else(|| err(Code::NOT_FOUND, format!("container {}", req.id)))?;
        Self::check_id(c, &req.id, &req.exec_id)?;
        let sig = req.signal;
        if c.sandboxed.is_some() {
            match (c.status, c.pid) {
                (Status::RUNNING, Some(child)) if sig != 0 => {
                    if crate::sandboxed::signal(child, sig as i32)
                        .map_err(|e| err(Code::UNKNOWN, e))?
                    {
                        // Replaced by SIGKILL (an init without a handler): reported as `sig`.
                        c.killed_by.get_or_insert(sig);
                    }
                }
                // Reaped, its exit being recorded; or a signal 0 (is it there?).
                (Status::RUNNING, _) => {}
                (Status::CREATED, _) if sig != 0 => {
                    // Never started: it ends now, as a process killed before it ran.
                    drop(g);
                    self.finished(sig.saturating_add(128), false, pid());
                }
                (Status::CREATED, _) => {}
                _ => {
                    return Err(err(
                        Code::NOT_FOUND,
                        format!("container {}: process already finished", req.id),
                    ));
                }
            }
            return Ok(Empty::new());
        }
        match c.status {
            Status::RUNNING => match sig as i32 {
                0 => {}
                libc::SIGKILL | libc::SIGTERM | libc::SIGINT | libc::SIGQUIT => {
                    c.killed_by.get_or_insert(sig);
                    match &c.instance {
                        Some(i) => i.interrupt(),
                        // A pod sandbox container ends at once.
                        None => {
                            drop(g);
                            self.exited(Exit::Interrupted);
                        }
                    }
                }
                _ => {
                    return Err(err(
                        Code::INVALID_ARGUMENT,
                        format!(
                            "signal {sig}: a wasm task can only be stopped (SIGKILL, SIGTERM, SIGINT, SIGQUIT)"
                        ),
                    ));
                }
            },
            Status::CREATED if sig != 0 => {
                // Never started: it ends now, as a process killed before it ran (its output
                // sinks dropped, so the writers finish; the exit is recorded and published).
                c.killed_by = Some(sig);
                c.sinks = None;
                drop(g);
                self.exited(Exit::Interrupted);
            }
            Status::CREATED => {}
            _ => {
                return Err(err(
                    Code::NOT_FOUND,
                    format!("container {}: process already finished", req.id),
                ));
            }
        }
        Ok(Empty::new())
    }

    fn wait(&self, _: &TtrpcContext, req: WaitRequest) -> Res<WaitResponse> {
        let mut g = self.lock()?;
        loop {
            let c = g
                .as_ref()
                .ok_or_else(|| err(Code::NOT_FOUND, format!("container {}", req.id)))?;
            Self::check_id(c, &req.id, &req.exec_id)?;
            if let Some((code, at)) = &c.exit {
                return Ok(WaitResponse {
                    exit_status: *code,
                    exited_at: Some(at.clone()).into(),
                    ..Default::default()
                });
            }
            g = self
                .0
                .changed
                .wait(g)
                .map_err(|_| err(Code::INTERNAL, "shim state lock poisoned"))?;
        }
    }

    fn delete(&self, _: &TtrpcContext, req: DeleteRequest) -> Res<DeleteResponse> {
        let mut g = self.lock()?;
        let c = g
            .as_ref()
            .ok_or_else(|| err(Code::NOT_FOUND, format!("container {}", req.id)))?;
        Self::check_id(c, &req.id, &req.exec_id)?;
        if c.status == Status::RUNNING {
            return Err(err(
                Code::FAILED_PRECONDITION,
                format!("container {} is running: kill it first", c.id),
            ));
        }
        let Some(mut c) = g.take() else {
            return Err(err(Code::NOT_FOUND, "no container"));
        };
        drop(g);
        if let Some(sb) = &mut c.sandboxed {
            sb.remove();
        }
        if let Some(m) = &c.mounted {
            crate::mount::unmount_rootfs(m);
        }
        let (code, at) = c.exit.clone().unwrap_or((0, crate::now()));
        self.0.publisher.publish(
            topics::TASK_DELETE_EVENT_TOPIC,
            &TaskDelete {
                container_id: c.id.clone(),
                pid: pid(),
                exit_status: code,
                exited_at: Some(at.clone()).into(),
                ..Default::default()
            },
        );
        Ok(DeleteResponse {
            pid: pid(),
            exit_status: code,
            exited_at: Some(at).into(),
            ..Default::default()
        })
    }

    fn pids(&self, _: &TtrpcContext, _req: PidsRequest) -> Res<PidsResponse> {
        let task = self.lock()?.as_ref().and_then(|c| c.pid);
        Ok(PidsResponse {
            processes: vec![ProcessInfo {
                pid: task.map_or(pid(), |p| p as u32),
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    fn close_io(&self, _: &TtrpcContext, _req: CloseIORequest) -> Res<Empty> {
        Ok(Empty::new()) // the guest has no stdin
    }

    fn connect(&self, _: &TtrpcContext, _req: ConnectRequest) -> Res<ConnectResponse> {
        let task = self.lock()?.as_ref().and_then(|c| c.pid);
        Ok(ConnectResponse {
            shim_pid: pid(),
            task_pid: task.map_or(pid(), |p| p as u32),
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _: &TtrpcContext, _req: ShutdownRequest) -> Res<Empty> {
        let busy = self.lock()?.is_some();
        if !busy {
            self.0.done.set();
        }
        Ok(Empty::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses() {
        assert_eq!(exit_status(&Exit::Code(3), None), (3, false));
        assert_eq!(exit_status(&Exit::Interrupted, Some(15)), (143, false));
        assert_eq!(exit_status(&Exit::Interrupted, None), (137, false));
        assert_eq!(
            exit_status(
                &Exit::Trap("unreachable (after memory growth to 17 MiB was refused: …)".into()),
                None
            ),
            (137, true)
        );
        assert_eq!(
            exit_status(&Exit::Trap("unreachable".into()), None),
            (134, false)
        );
    }
}
