//! The real `deposium-embed serve` as a child process on a loopback port.
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::http;

/// A running `deposium-embed serve --host 127.0.0.1 --port 0 ...`, killed on drop.
pub struct Server {
    child: Option<Child>,
    /// `127.0.0.1:PORT`, from the `listening on http://ADDR` log line.
    pub addr: String,
    pub pid: u32,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Start the server and wait until it listens (not until models are ready: see [`Server::wait_healthy`]).
    pub fn spawn(bin: &Path, args: &[&str]) -> anyhow::Result<Server> {
        anyhow::ensure!(
            bin.is_file(),
            "{} not found: build it first (`cargo build --release -p deposium-embed`)",
            bin.display()
        );
        let mut child = Command::new(bin)
            .args(["serve", "--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .env("NO_COLOR", "1")
            .env("DEPOSIUM_LOG", "info,ort=warn")
            .env_remove("DEPOSIUM_API_KEY")
            .env_remove("DEPOSIUM_MODELS")
            .env_remove("HOST")
            .env_remove("PORT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("listening on http://") {
                    let addr: String =
                        line[i + "listening on http://".len()..].chars().take_while(|c| !c.is_whitespace()).collect();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                let mut l = log2.lock().unwrap_or_else(|p| p.into_inner());
                l.push_str(&line);
                l.push('\n');
            }
        });
        let pid = child.id();
        let addr = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("the server did not start listening:\n{}", log.lock().unwrap_or_else(|p| p.into_inner()));
            }
        };
        http::loopback(&addr)?;
        Ok(Server { child: Some(child), addr, pid, log })
    }

    /// Start and wait until `/health` answers 200 (every model settled, at least one ready).
    pub fn start(bin: &Path, args: &[&str], timeout: Duration) -> anyhow::Result<Server> {
        let s = Self::spawn(bin, args)?;
        s.wait_healthy(timeout)?;
        Ok(s)
    }

    pub fn wait_healthy(&self, timeout: Duration) -> anyhow::Result<()> {
        let t0 = Instant::now();
        loop {
            if let Ok(r) = http::once(&self.addr, "GET", "/health", b"", Duration::from_secs(10)) {
                if r.status == 200 {
                    return Ok(());
                }
            }
            if t0.elapsed() > timeout {
                anyhow::bail!("server not healthy after {timeout:?}:\n{}", self.log());
            }
            if !self.running() {
                anyhow::bail!("server exited before it was healthy:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log (stderr) so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// False once the process has exited (a zombie counts as exited; does not wait).
    pub fn running(&self) -> bool {
        // try_wait needs &mut; peek through /proc so shared references work.
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .is_ok_and(|s| !s.lines().any(|l| l.starts_with("State:") && l.contains('Z')))
    }

    /// Resident memory of the server process in bytes (`VmRSS` from `/proc/<pid>/status`).
    pub fn rss_bytes(&self) -> Option<u64> {
        rss_bytes(self.pid)
    }

    /// Send a signal (`TERM`, `INT`, `KILL`...) with `kill(1)`.
    pub fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let ok = Command::new("kill").args([&format!("-{sig}"), &self.pid.to_string()]).status()?;
        anyhow::ensure!(ok.success(), "kill -{sig} {} failed", self.pid);
        Ok(())
    }

    /// Wait for the process to exit (after a signal); `None` on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let t0 = Instant::now();
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                self.child = None;
                return Some(st);
            }
            if t0.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `VmRSS` of a process in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
