//! `deposium-embed pull` against a fake Hugging Face Hub on loopback (same URL layout as the real one:
//! `/api/models/{repo}/revision/{rev}` and `/{repo}/resolve/{rev}/{file}`, LFS files redirected to a "CDN" path,
//! Range requests answered with 206). The real Hub is never contacted.
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

#[derive(Clone)]
struct FakeFile {
    path: String,
    data: Vec<u8>,
    /// Listed as an LFS file with this sha256 (may be wrong on purpose).
    lfs_sha: Option<String>,
}

#[derive(Clone, Debug)]
struct Req {
    path: String,
    range: Option<String>,
    auth: Option<String>,
}

#[derive(Default)]
struct State {
    repos: HashMap<String, Vec<FakeFile>>,
    /// Repo → the token it requires.
    gated: HashMap<String, String>,
    /// File path → bytes to send before dropping the connection (once).
    cut: HashMap<String, usize>,
    log: Vec<Req>,
}

struct Hub {
    port: u16,
    state: Arc<Mutex<State>>,
}

fn sha(d: &[u8]) -> String {
    hex::encode(Sha256::digest(d))
}

/// Deterministic, incompressible-looking bytes.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn lfs(path: &str, data: Vec<u8>) -> FakeFile {
    FakeFile { path: path.into(), lfs_sha: Some(sha(&data)), data }
}

fn plain(path: &str, data: &[u8]) -> FakeFile {
    FakeFile { path: path.into(), data: data.to_vec(), lfs_sha: None }
}

impl Hub {
    fn start() -> Hub {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = serve(c, &st);
                });
            }
        });
        Hub { port, state }
    }

    fn add(&self, repo: &str, files: Vec<FakeFile>) {
        self.state.lock().unwrap().repos.insert(repo.into(), files);
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> Vec<Req> {
        self.state.lock().unwrap().log.clone()
    }

    fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn respond(c: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) -> std::io::Result<()> {
    let mut h = format!("HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    c.write_all(h.as_bytes())?;
    c.write_all(body)?;
    c.flush()
}

fn error(c: &mut TcpStream, status: &str, code: &str, msg: &str) -> std::io::Result<()> {
    respond(
        c,
        status,
        &[("X-Error-Code", code.into()), ("Content-Type", "application/json".into())],
        format!("{{\"error\":\"{msg}\"}}").as_bytes(),
    )
}

fn serve(mut c: TcpStream, st: &Mutex<State>) -> std::io::Result<()> {
    let mut r = BufReader::new(c.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (mut range, mut auth) = (None, None);
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.to_ascii_lowercase().as_str() {
                "range" => range = Some(v.trim().to_string()),
                "authorization" => auth = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    let path = target.split('?').next().unwrap().to_string();
    let mut s = st.lock().unwrap();
    s.log.push(Req { path: path.clone(), range: range.clone(), auth: auth.clone() });
    // Which repo: the API path or the resolve path.
    let (api, rest) = match path.strip_prefix("/api/models/") {
        Some(p) => (true, p.to_string()),
        None => (false, path.trim_start_matches('/').trim_start_matches("cdn/").to_string()),
    };
    let mut parts = rest.splitn(3, '/');
    let repo = format!("{}/{}", parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let tail = parts.next().unwrap_or("").to_string();
    let Some(files) = s.repos.get(&repo).cloned() else {
        drop(s);
        return error(&mut c, "401 Unauthorized", "RepoNotFound", "Repository not found");
    };
    if let Some(tok) = s.gated.get(&repo) {
        let want = format!("Bearer {tok}");
        match &auth {
            None => {
                drop(s);
                return error(&mut c, "401 Unauthorized", "GatedRepo", "Access to this model is restricted");
            }
            Some(a) if *a != want => {
                drop(s);
                return error(&mut c, "403 Forbidden", "GatedRepo", "Your token has no access");
            }
            _ => {}
        }
    }
    if api {
        drop(s);
        let rev = decode(tail.strip_prefix("revision/").unwrap_or(""));
        if rev != "main" && rev != COMMIT && rev != "v1.0" {
            return error(&mut c, "404 Not Found", "RevisionNotFound", "Invalid rev id");
        }
        let siblings: Vec<serde_json::Value> = files
            .iter()
            .map(|f| match &f.lfs_sha {
                Some(h) => serde_json::json!({"rfilename": f.path, "size": f.data.len(), "blobId": "x",
                    "lfs": {"sha256": h, "size": f.data.len(), "pointerSize": 134}}),
                None => serde_json::json!({"rfilename": f.path, "size": f.data.len(), "blobId": "y"}),
            })
            .collect();
        let body = serde_json::json!({"id": repo, "sha": COMMIT, "siblings": siblings});
        return respond(&mut c, "200 OK", &[("Content-Type", "application/json".into())], body.to_string().as_bytes());
    }
    // resolve/{rev}/{file}, or the CDN path the LFS files are redirected to.
    let cdn = path.starts_with("/cdn/");
    let Some(rest) = tail.strip_prefix("resolve/") else {
        drop(s);
        return error(&mut c, "404 Not Found", "EntryNotFound", "bad path");
    };
    let (rev, file) = rest.split_once('/').unwrap_or((rest, ""));
    assert_eq!(rev, COMMIT, "files are fetched by commit");
    let file = decode(file);
    let Some(f) = files.iter().find(|f| f.path == file) else {
        drop(s);
        return error(&mut c, "404 Not Found", "EntryNotFound", "Entry not found");
    };
    if f.lfs_sha.is_some() && !cdn {
        drop(s);
        let loc = format!("/cdn{path}");
        return respond(
            &mut c,
            "302 Found",
            &[("Location", loc), ("X-Linked-Etag", format!("\"{}\"", f.lfs_sha.clone().unwrap()))],
            b"",
        );
    }
    let cut = if range.is_none() { s.cut.remove(&f.path) } else { None };
    drop(s);
    let len = f.data.len();
    if let Some(r) = range {
        let from: usize = r.trim_start_matches("bytes=").trim_end_matches('-').parse().unwrap();
        if from >= len {
            return respond(&mut c, "416 Range Not Satisfiable", &[("Content-Range", format!("bytes */{len}"))], b"");
        }
        return respond(
            &mut c,
            "206 Partial Content",
            &[("Content-Range", format!("bytes {from}-{}/{len}", len - 1))],
            &f.data[from..],
        );
    }
    if let Some(n) = cut {
        // Promise everything, send part of it, hang up.
        c.write_all(format!("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {len}\r\n\r\n").as_bytes())?;
        c.write_all(&f.data[..n])?;
        c.flush()?;
        return c.shutdown(std::net::Shutdown::Both);
    }
    respond(&mut c, "200 OK", &[], &f.data)
}

struct Tmp(PathBuf);

impl Tmp {
    fn new(name: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("deposium-pull-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The binary with a clean environment: no token, no proxy, a fresh HOME and DEPOSIUM_HOME.
fn pull(hub: &Hub, home: &Path, args: &[&str], token: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_deposium-embed"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("DEPOSIUM_HOME", home.join("deposium"))
        .env("HF_ENDPOINT", hub.endpoint())
        .arg("pull")
        .args(args);
    if let Some(t) = token {
        cmd.env("HF_TOKEN", t);
    }
    cmd.output().unwrap()
}

fn ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "pull failed: {err}");
    err
}

fn fails(o: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "pull should fail: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr should mention {n:?}: {err}");
    }
    assert!(!err.contains("panicked"), "no panic: {err}");
    err
}

fn tiny_repo() -> Vec<FakeFile> {
    vec![
        plain(".gitattributes", b"*.safetensors filter=lfs\n"),
        plain("config.json", br#"{"model_type": "bert"}"#),
        lfs("model.safetensors", bytes(3 << 20, 1)),
        plain("1_Pooling/config.json", br#"{"pooling_mode_mean_tokens": true}"#),
        lfs("pytorch_model.bin", bytes(1 << 20, 2)),
        lfs("onnx/model.onnx", bytes(1 << 20, 3)),
        plain("tokenizer config.json", b"{}"),
    ]
}

fn assert_same(dir: &Path, files: &[FakeFile], names: &[&str]) {
    for n in names {
        let f = files.iter().find(|f| f.path == *n).unwrap();
        let got = std::fs::read(dir.join(n)).unwrap_or_else(|e| panic!("{n}: {e}"));
        assert!(got == f.data, "{n} differs");
    }
}

#[test]
fn full_download_then_nothing_to_do() {
    let hub = Hub::start();
    let files = tiny_repo();
    hub.add("acme/tiny-embed", files.clone());
    let home = Tmp::new("full");
    let o = pull(&hub, &home.0, &["acme/tiny-embed"], None);
    let err = ok(&o);
    let dir = home.0.join("deposium/models/tiny-embed");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), dir.display().to_string());
    assert_same(
        &dir,
        &files,
        &[".gitattributes", "config.json", "model.safetensors", "1_Pooling/config.json", "tokenizer config.json"],
    );
    // Other frameworks' copies of the weights are skipped when there are safetensors.
    assert!(!dir.join("pytorch_model.bin").exists() && !dir.join("onnx").exists(), "{err}");
    assert!(err.contains("2 other-framework files skipped"), "{err}");
    assert!(dir.join(".complete").exists());
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(".pull.json")).unwrap()).unwrap();
    assert_eq!(manifest["commit"], COMMIT);
    assert_eq!(manifest["repo"], "acme/tiny-embed");
    assert!(std::fs::read_dir(&dir).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".part")));
    // No token set: none sent.
    assert!(hub.log().iter().all(|r| r.auth.is_none()));
    // Pulling again downloads nothing; a damaged file is fetched again.
    hub.clear_log();
    ok(&pull(&hub, &home.0, &["acme/tiny-embed"], None));
    assert!(hub.log().iter().all(|r| r.path.starts_with("/api/")), "{:?}", hub.log());
    std::fs::write(dir.join("model.safetensors"), b"garbage").unwrap();
    hub.clear_log();
    ok(&pull(&hub, &home.0, &["acme/tiny-embed"], None));
    assert_same(&dir, &files, &["model.safetensors"]);
    assert_eq!(
        hub.log().iter().filter(|r| r.path.contains("/resolve/")).count(),
        2,
        "only model.safetensors: {:?}",
        hub.log()
    );
    // --all-files and --dir.
    let other = home.0.join("elsewhere");
    ok(&pull(&hub, &home.0, &["acme/tiny-embed", "--all-files", "--dir", other.to_str().unwrap()], None));
    assert_same(&other, &files, &["pytorch_model.bin", "onnx/model.onnx", "model.safetensors"]);
}

#[test]
fn resumes_a_partial_file_and_a_dropped_connection() {
    let hub = Hub::start();
    let files = tiny_repo();
    hub.add("acme/tiny-embed", files.clone());
    let home = Tmp::new("resume");
    let dir = home.0.join("deposium/models/tiny-embed");
    std::fs::create_dir_all(&dir).unwrap();
    // An earlier, interrupted pull left 1 MiB of the weights.
    let big = &files.iter().find(|f| f.path == "model.safetensors").unwrap().data;
    std::fs::write(dir.join("model.safetensors.part"), &big[..1 << 20]).unwrap();
    // And this time the connection of config.json drops (no Range) after 5 bytes.
    hub.state.lock().unwrap().cut.insert("config.json".into(), 5);
    let err = ok(&pull(&hub, &home.0, &["acme/tiny-embed"], None));
    assert_same(&dir, &files, &["model.safetensors", "config.json"]);
    let log = hub.log();
    let big_reqs: Vec<_> = log.iter().filter(|r| r.path.ends_with("model.safetensors")).collect();
    assert!(big_reqs.iter().all(|r| r.range.as_deref() == Some("bytes=1048576-")), "resumed at 1 MiB: {big_reqs:?}");
    let cfg: Vec<_> =
        log.iter().filter(|r| r.path.ends_with("/config.json") && !r.path.contains("1_Pooling")).collect();
    assert_eq!(cfg.len(), 2, "{cfg:?}");
    assert_eq!(cfg[0].range, None);
    assert_eq!(cfg[1].range.as_deref(), Some("bytes=5-"));
    assert!(err.contains("resuming"), "{err}");
    assert!(!dir.join("model.safetensors.part").exists());
}

#[test]
fn sha_mismatch_is_a_clear_error_and_leaves_no_file() {
    let hub = Hub::start();
    let mut files = tiny_repo();
    files[2].lfs_sha = Some("ab".repeat(32));
    hub.add("acme/corrupt", files);
    let home = Tmp::new("sha");
    let o = pull(&hub, &home.0, &["acme/corrupt"], None);
    fails(&o, &["model.safetensors", "sha256 mismatch", &"ab".repeat(32), "run pull again"]);
    let dir = home.0.join("deposium/models/corrupt");
    assert!(!dir.join("model.safetensors").exists() && !dir.join("model.safetensors.part").exists());
    assert!(!dir.join(".complete").exists());
}

#[test]
fn missing_repo_or_revision_and_bad_names_are_clear_errors() {
    let hub = Hub::start();
    hub.add("acme/tiny-embed", tiny_repo());
    let home = Tmp::new("missing");
    fails(
        &pull(&hub, &home.0, &["acme/does-not-exist"], None),
        &["repository acme/does-not-exist not found", "HF_TOKEN"],
    );
    fails(&pull(&hub, &home.0, &["acme/tiny-embed", "--revision", "v9"], None), &["revision not found"]);
    ok(&pull(&hub, &home.0, &["acme/tiny-embed", "--revision", "v1.0"], None));
    fails(
        &pull(&hub, &home.0, &["no-such-model"], None),
        &["neither ORG/NAME nor a known model", "google/embeddinggemma-300m"],
    );
    // Nothing listening: a clear error too.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let o = Command::new(env!("CARGO_BIN_EXE_deposium-embed"))
        .env_clear()
        .env("HOME", &home.0)
        .env("HF_ENDPOINT", format!("http://127.0.0.1:{dead}"))
        .args(["pull", "acme/x", "--dir", home.0.join("x").to_str().unwrap()])
        .output()
        .unwrap();
    fails(&o, &["cannot reach http://127.0.0.1:"]);
}

#[test]
fn token_is_sent_for_gated_repos() {
    let hub = Hub::start();
    let files = tiny_repo();
    hub.add("google/embeddinggemma-300m", files.clone());
    hub.state.lock().unwrap().gated.insert("google/embeddinggemma-300m".into(), "hf_good".into());
    let home = Tmp::new("token");
    fails(&pull(&hub, &home.0, &["embeddinggemma"], None), &["gated", "HF_TOKEN", "no HF_TOKEN was set"]);
    fails(&pull(&hub, &home.0, &["embeddinggemma"], Some("hf_bad")), &["gated", "lacks access"]);
    hub.clear_log();
    // The alias maps to google/embeddinggemma-300m, into the directory `serve --model embeddinggemma` reads.
    let err = ok(&pull(&hub, &home.0, &["embeddinggemma"], Some("hf_good")));
    assert!(err.contains("serve --model embeddinggemma"), "{err}");
    let dir = home.0.join("deposium/models/embeddinggemma-300m");
    assert_same(&dir, &files, &["config.json", "model.safetensors"]);
    let log = hub.log();
    assert!(log.iter().any(|r| r.path.starts_with("/api/models/google/embeddinggemma-300m/revision/main")));
    assert!(log.iter().all(|r| r.auth.as_deref() == Some("Bearer hf_good")), "{log:?}");
}
