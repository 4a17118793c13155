//! The real `gatehouse` binary on a copy of the shipped `config/` and `scripts/`: served as a
//! newcomer (or an operator) runs it, and its operator commands.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::wait_until;

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Copies the shipped `config/` and `scripts/` into `root`, as a clone has them (no signing
/// key: a first start generates it).
pub fn copy_shipped(root: &Path) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    copy_dir(&repo.join("config"), &root.join("config"));
    copy_dir(&repo.join("scripts"), &root.join("scripts"));
    let _ = std::fs::remove_file(root.join("config/oidc-signing-key.pem"));
}

/// A `gatehouse serve` process; killed on drop.
pub struct Served {
    pub child: Child,
    /// Everything it printed on standard output so far.
    pub stdout: Arc<Mutex<String>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `gatehouse serve --listen 127.0.0.1:PORT` in `root` with `env` set; returns once every port
/// of `ports` answers.
pub fn serve_in(root: &Path, port: u16, env: &[(&str, &str)], ports: &[u16]) -> Served {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(root)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let stdout = Arc::new(Mutex::new(String::new()));
    let pipe = child.stdout.take().unwrap();
    let collected = stdout.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut text = collected.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
    for port in std::iter::once(&port).chain(ports) {
        let mut exited = None;
        let up = wait_until(Duration::from_secs(60), || {
            exited = child.try_wait().ok().flatten();
            exited.is_some() || std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok()
        });
        assert!(
            exited.is_none(),
            "gatehouse serve exited ({exited:?}): run `gatehouse check` in {root:?}"
        );
        assert!(up, "gatehouse serve did not listen on {port}");
    }
    Served { child, stdout }
}

/// What an operator command did.
pub struct Ran {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// `gatehouse ARGS` in `root`, with `stdin` as its standard input.
pub fn run_in(root: &Path, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Ran {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    command
        .args(args)
        .current_dir(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    Ran {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
