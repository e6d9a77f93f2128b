//! `deposium-embed pull NAME`: download a model repository from the Hugging Face Hub into `$DEPOSIUM_HOME/models`.
//!
//! A small blocking client for the Hub's HTTP API (no async runtime, no Hub cache layout):
//! `GET {endpoint}/api/models/{repo}/revision/{rev}?blobs=true` lists the files (`siblings`, with the LFS sha256
//! and size of large files), then each file comes from `{endpoint}/{repo}/resolve/{commit}/{file}` into
//! `<file>.part`, resumed with a `Range` request after an interruption, checked against the Hub's sha256 and size,
//! and renamed into place. `HF_ENDPOINT` (default `https://huggingface.co`) and `HF_TOKEN` (gated or private
//! repositories) are honoured, like the Hub's own clients.
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use deposium_engine::{paths, registry};
use sha2::{Digest, Sha256};

const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// Tries per file when the connection drops mid-transfer; each try resumes where the last one stopped.
const TRIES: u32 = 5;

#[derive(clap::Args, Debug)]
pub struct PullArgs {
    /// Hub repository (ORG/NAME, e.g. google/embeddinggemma-300m) or a known model with a Hub repository
    /// (embeddinggemma, potion-base-8M, all-MiniLM-L6-v2).
    pub name: String,
    /// Branch, tag or commit.
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// Destination directory (default: $DEPOSIUM_HOME/models/<model directory>, where `serve --model NAME` looks).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Download every file, including other frameworks' copies of the weights (PyTorch .bin, TF, Flax, ONNX,
    /// OpenVINO exports), which are skipped by default when the repository has safetensors weights.
    #[arg(long)]
    pub all_files: bool,
}

/// One file of the repository as the Hub lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteFile {
    pub path: String,
    pub size: Option<u64>,
    /// sha256 of the content (LFS files), lowercase hex.
    pub sha256: Option<String>,
}

/// `pull NAME`: the Hub repository and the directory under `$DEPOSIUM_HOME/models` it goes to.
pub fn resolve_name(name: &str) -> anyhow::Result<(String, String)> {
    let name = name.trim().trim_matches('/');
    let base = name.strip_suffix(":latest").unwrap_or(name);
    let known = |n: &str| {
        registry::KNOWN.iter().find(|(canon, _, _, aliases)| {
            canon.eq_ignore_ascii_case(n) || aliases.iter().any(|a| a.eq_ignore_ascii_case(n))
        })
    };
    if base.contains('/') {
        if base.split('/').count() != 2 || base.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
            bail!("'{name}' is not a Hub repository name (expected ORG/NAME, e.g. google/embeddinggemma-300m)");
        }
        let dir = match known(base) {
            Some(&(_, dir, _, _)) => dir.to_string(),
            None => base.rsplit('/').next().unwrap_or(base).to_string(),
        };
        return Ok((base.to_string(), dir));
    }
    let hub_names: Vec<String> = registry::KNOWN
        .iter()
        .filter_map(|(canon, _, _, aliases)| aliases.iter().find(|a| a.contains('/')).map(|r| format!("{canon} → {r}")))
        .collect();
    match known(base) {
        Some(&(canon, dir, _, aliases)) => match aliases.iter().find(|a| a.contains('/')) {
            Some(repo) => Ok((repo.to_string(), dir.to_string())),
            None => bail!(
                "'{canon}' has no Hub repository known to deposium-embed (`make fetch` brings it); pass ORG/NAME. Known: {}",
                hub_names.join(", ")
            ),
        },
        None => bail!("'{name}' is neither ORG/NAME nor a known model; known: {}", hub_names.join(", ")),
    }
}

fn endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .map(|s| s.trim().trim_end_matches('/').to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
}

/// `HF_TOKEN` (or the older `HUGGING_FACE_HUB_TOKEN`), else the token file `huggingface-cli login` writes.
fn token() -> Option<String> {
    for var in ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"] {
        if let Ok(t) = std::env::var(var) {
            if !t.trim().is_empty() {
                return Some(t.trim().to_string());
            }
        }
    }
    let file = std::env::var_os("HF_TOKEN_PATH").map(PathBuf::from).or_else(|| {
        std::env::var_os("HF_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("huggingface")))
            .map(|h| h.join("token"))
    })?;
    fs::read_to_string(file).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Percent-encode a URL path piece; `/` is kept when `keep_slash`.
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

struct Hub {
    agent: ureq::Agent,
    endpoint: String,
    token: Option<String>,
}

impl Hub {
    fn from_env() -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(concat!("deposium-embed/", env!("CARGO_PKG_VERSION")))
            // Keep the token on redirects within the Hub (renamed repositories), drop it for the CDN.
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_per_read(Some(Duration::from_secs(120)))
            .build();
        Hub { agent: config.new_agent(), endpoint: endpoint(), token: token() }
    }

    fn get(&self, url: &str, range_from: u64) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let mut req = self.agent.get(url);
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if range_from > 0 {
            req = req.header("Range", format!("bytes={range_from}-"));
        }
        req.call()
    }

    /// A non-2xx answer as a sentence a user can act on.
    fn status_error(&self, repo: &str, what: &str, resp: &mut ureq::http::Response<ureq::Body>) -> anyhow::Error {
        let status = resp.status().as_u16();
        let code = resp.headers().get("x-error-code").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let msg = resp.body_mut().read_to_string().ok().and_then(|b| {
            serde_json::from_str::<serde_json::Value>(&b)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
        });
        let detail = msg.map(|m| format!(" ({m})")).unwrap_or_default();
        let url = format!("{}/{repo}", self.endpoint);
        match (status, code.as_str()) {
            (_, "GatedRepo") | (403, _) => anyhow!(
                "{what}: access to {repo} is gated or forbidden (HTTP {status}){detail}: accept its terms at {url} and set HF_TOKEN \
                 to a token of that account{}",
                if self.token.is_some() { " (a token was sent; it lacks access)" } else { " (no HF_TOKEN was set)" }
            ),
            (_, "RevisionNotFound") => anyhow!("{what}: revision not found in {repo} (HTTP {status}){detail}"),
            (_, "EntryNotFound") => anyhow!("{what}: file not found in {repo} (HTTP {status}){detail}"),
            (401 | 404, _) => anyhow!(
                "{what}: repository {repo} not found on {} (HTTP {status}){detail}; check the name{}",
                self.endpoint,
                if self.token.is_some() { ", and that HF_TOKEN can read it" } else { ", or set HF_TOKEN if it is private or gated" }
            ),
            (429, _) => anyhow!("{what}: rate-limited by {} (HTTP 429); try again later or set HF_TOKEN", self.endpoint),
            _ => anyhow!("{what}: HTTP {status} from {}{detail}", self.endpoint),
        }
    }

    /// The commit the revision points to and its files.
    fn list(&self, repo: &str, revision: &str) -> anyhow::Result<(Option<String>, Vec<RemoteFile>)> {
        let url = format!(
            "{}/api/models/{}/revision/{}?blobs=true",
            self.endpoint,
            encode(repo, true),
            encode(revision, false)
        );
        let mut resp = self.get(&url, 0).map_err(|e| anyhow!("cannot reach {}: {e}", self.endpoint))?;
        if !resp.status().is_success() {
            return Err(self.status_error(repo, &format!("listing {repo}@{revision}"), &mut resp));
        }
        let body =
            resp.body_mut().with_config().limit(64 << 20).read_to_string().context("reading the Hub's file list")?;
        let v: serde_json::Value = serde_json::from_str(&body).context("the Hub's file list is not JSON")?;
        parse_listing(&v)
    }
}

/// Parse `GET /api/models/{repo}/revision/{rev}?blobs=true`.
pub fn parse_listing(v: &serde_json::Value) -> anyhow::Result<(Option<String>, Vec<RemoteFile>)> {
    let commit = v.get("sha").and_then(|s| s.as_str()).map(String::from);
    let siblings = v
        .get("siblings")
        .and_then(|s| s.as_array())
        .ok_or_else(|| anyhow!("the Hub's answer has no file list (siblings)"))?;
    let mut files = Vec::new();
    for s in siblings {
        let Some(path) = s.get("rfilename").and_then(|p| p.as_str()) else { continue };
        let lfs = s.get("lfs");
        let sha256 = lfs
            .and_then(|l| l.get("sha256").or_else(|| l.get("oid")))
            .and_then(|x| x.as_str())
            .map(|x| x.trim_start_matches("sha256:").to_ascii_lowercase())
            .filter(|x| x.len() == 64 && x.bytes().all(|b| b.is_ascii_hexdigit()));
        let size =
            s.get("size").and_then(|x| x.as_u64()).or_else(|| lfs.and_then(|l| l.get("size")).and_then(|x| x.as_u64()));
        files.push(RemoteFile { path: path.to_string(), size, sha256 });
    }
    Ok((commit, files))
}

/// Files that are other frameworks' copies of the weights, skipped unless `--all-files`.
pub fn wanted(files: &[RemoteFile], all: bool) -> Vec<RemoteFile> {
    if all {
        return files.to_vec();
    }
    let has_safetensors = files.iter().any(|f| !f.path.contains('/') && f.path.ends_with(".safetensors"));
    files
        .iter()
        .filter(|f| {
            let p = f.path.as_str();
            let other_framework = [".h5", ".msgpack", ".ot", ".mlmodel", ".tflite"].iter().any(|e| p.ends_with(e))
                || ["openvino/", "coreml/", "tf/", "flax/"].iter().any(|d| p.starts_with(d));
            let duplicate = has_safetensors
                && (p.starts_with("onnx/")
                    || p.ends_with(".bin") && p.contains("pytorch_model")
                    || p.ends_with(".gguf"));
            !other_framework && !duplicate
        })
        .cloned()
        .collect()
}

/// A repository path as a relative path under the destination, refusing anything that would leave it.
fn safe_rel(p: &str) -> anyhow::Result<PathBuf> {
    let rel = Path::new(p);
    if p.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        bail!("the Hub listed an unsafe file name {p:?}; refusing to write it");
    }
    Ok(rel.to_path_buf())
}

fn human(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

fn sha256_file(p: &Path) -> anyhow::Result<(Sha256, u64)> {
    let mut h = Sha256::new();
    let mut f = File::open(p).with_context(|| format!("reading {}", p.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((h, n))
}

enum Step {
    Done,
    /// Connection trouble after some progress; resume.
    Retry(anyhow::Error),
}

/// Download `url` into `dest` through `dest.part`, resuming a partial file, checking size and sha256.
fn download(
    hub: &Hub,
    repo: &str,
    url: &str,
    f: &RemoteFile,
    dest: &Path,
    pb: &indicatif::ProgressBar,
    base: u64,
) -> anyhow::Result<()> {
    let part = PathBuf::from(format!("{}.part", dest.display()));
    let mut restarted = false;
    let mut tries = 0;
    loop {
        let have = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        let have = if f.size.is_some_and(|s| have > s) { 0 } else { have };
        let resumed = have > 0;
        let step = fetch_into(hub, repo, url, f, &part, have, pb, base)?;
        match step {
            Step::Retry(e) => {
                tries += 1;
                if tries >= TRIES {
                    return Err(
                        e.context(format!("{}: giving up after {TRIES} tries; run pull again to resume", f.path))
                    );
                }
                pb.suspend(|| eprintln!("  {}: {e:#}; resuming (try {}/{TRIES})", f.path, tries + 1));
                std::thread::sleep(Duration::from_millis(300 * tries as u64));
                continue;
            }
            Step::Done => {}
        }
        // Check what is on disk, whole.
        let (h, len) = sha256_file(&part)?;
        let got = hex::encode(h.finalize());
        let size_ok = f.size.is_none_or(|s| s == len);
        let sha_ok = f.sha256.as_deref().is_none_or(|want| want == got);
        if size_ok && sha_ok {
            File::open(&part)?.sync_all().ok();
            fs::rename(&part, dest).with_context(|| format!("renaming {} into place", part.display()))?;
            return Ok(());
        }
        let _ = fs::remove_file(&part);
        if resumed && !restarted {
            // The earlier partial file may be from another revision: start this file over, once.
            restarted = true;
            pb.suspend(|| {
                eprintln!("  {}: resumed download does not verify; downloading it again from the start", f.path)
            });
            continue;
        }
        if !size_ok {
            bail!(
                "{}: downloaded {len} bytes, the Hub lists {} bytes; the partial download was removed, run pull again",
                f.path,
                f.size.unwrap_or(0)
            );
        }
        bail!(
            "{}: sha256 mismatch: got {got}, the Hub lists {}; the download was removed (corrupted in transit or \
             changed on the server), run pull again",
            f.path,
            f.sha256.as_deref().unwrap_or("")
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn fetch_into(
    hub: &Hub,
    repo: &str,
    url: &str,
    f: &RemoteFile,
    part: &Path,
    have: u64,
    pb: &indicatif::ProgressBar,
    base: u64,
) -> anyhow::Result<Step> {
    if f.size.is_some_and(|s| s == have) && have > 0 {
        return Ok(Step::Done); // Fully downloaded before; the caller verifies it.
    }
    let mut resp = match hub.get(url, have) {
        Ok(r) => r,
        Err(
            e @ (ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound),
        ) => return Ok(Step::Retry(anyhow!("{e}"))),
        Err(e) => bail!("{}: {e}", f.path),
    };
    let status = resp.status().as_u16();
    let mut start = have;
    match status {
        206 => {
            let cr = resp.headers().get("content-range").and_then(|v| v.to_str().ok()).unwrap_or("");
            let ok =
                cr.strip_prefix("bytes ").and_then(|r| r.split('-').next()).and_then(|s| s.trim().parse::<u64>().ok())
                    == Some(have);
            if !ok {
                bail!(
                    "{}: the server answered a resume request with Content-Range {cr:?}, expected bytes {have}-",
                    f.path
                );
            }
        }
        200 => start = 0, // No range support: start over.
        416 if have > 0 => {
            // Nothing past what we have: the part is complete, or stale. Let the checks decide.
            if f.size.is_none() {
                return Ok(Step::Done);
            }
            let _ = fs::remove_file(part);
            return Ok(Step::Retry(anyhow!("server refused the resume range")));
        }
        500..=599 => return Ok(Step::Retry(anyhow!("HTTP {status} from the server"))),
        _ => return Err(hub.status_error(repo, &format!("downloading {}", f.path), &mut resp)),
    }
    let mut out = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(part)
        .with_context(|| format!("writing {}", part.display()))?;
    out.set_len(start)?;
    out.seek(SeekFrom::Start(start))?;
    pb.set_position(base + start);
    let mut body = resp.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 20];
    let mut got = start;
    loop {
        let k = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) => {
                out.flush()?;
                return Ok(Step::Retry(anyhow!(
                    "connection lost after {} of {}: {e}",
                    human(got),
                    f.size.map(human).unwrap_or("?".into())
                )));
            }
        };
        out.write_all(&buf[..k]).with_context(|| format!("writing {}", part.display()))?;
        got += k as u64;
        pb.set_position(base + got);
    }
    out.flush()?;
    if f.size.is_some_and(|s| got < s) {
        return Ok(Step::Retry(anyhow!("connection closed after {} of {}", human(got), human(f.size.unwrap_or(0)))));
    }
    Ok(Step::Done)
}

pub fn run(a: PullArgs) -> anyhow::Result<()> {
    let (repo, dirname) = resolve_name(&a.name)?;
    let dest = a.dir.clone().unwrap_or_else(|| paths::models_dir().join(&dirname));
    let hub = Hub::from_env();
    eprintln!("pulling {repo}@{} from {} into {}", a.revision, hub.endpoint, dest.display());
    let (commit, all) = hub.list(&repo, &a.revision)?;
    let files = wanted(&all, a.all_files);
    if files.is_empty() {
        bail!("{repo}@{}: the Hub lists no files to download", a.revision);
    }
    let skipped = all.len() - files.len();
    fs::create_dir_all(&dest).with_context(|| format!("creating {}", dest.display()))?;
    let _ = fs::remove_file(dest.join(".complete"));
    // Download by commit so that a branch moving mid-pull cannot mix two revisions.
    let rev_in_url = encode(commit.as_deref().unwrap_or(&a.revision), false);
    let total: u64 = files.iter().filter_map(|f| f.size).sum();
    let pb = indicatif::ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr());
    pb.set_style(
        indicatif::ProgressStyle::with_template("{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut done = 0u64;
    let mut fetched = 0usize;
    for f in &files {
        let rel = safe_rel(&f.path)?;
        let target = dest.join(&rel);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        pb.set_message(f.path.clone());
        // Already here and intact (an earlier pull): keep it.
        if let Ok(m) = fs::metadata(&target) {
            let size_ok = f.size.is_none_or(|s| s == m.len());
            let sha_ok = size_ok
                && match &f.sha256 {
                    Some(want) => hex::encode(sha256_file(&target)?.0.finalize()) == *want,
                    None => f.size.is_some(),
                };
            if size_ok && sha_ok {
                done += m.len();
                pb.set_position(done);
                continue;
            }
        }
        let url = format!("{}/{}/resolve/{}/{}", hub.endpoint, encode(&repo, true), rev_in_url, encode(&f.path, true));
        pb.suspend(|| eprintln!("  {} ({})", f.path, f.size.map(human).unwrap_or_else(|| "size unknown".into())));
        download(&hub, &repo, &url, f, &target, &pb, done)?;
        done += f.size.unwrap_or_else(|| fs::metadata(&target).map(|m| m.len()).unwrap_or(0));
        pb.set_position(done);
        fetched += 1;
    }
    pb.finish_and_clear();
    let manifest = serde_json::json!({
        "repo": repo,
        "revision": a.revision,
        "commit": commit,
        "endpoint": hub.endpoint,
        "files": files.iter().map(|f| serde_json::json!({"path": f.path, "size": f.size, "sha256": f.sha256})).collect::<Vec<_>>(),
    });
    fs::write(dest.join(".pull.json"), serde_json::to_vec_pretty(&manifest)?)?;
    File::create(dest.join(".complete"))?;
    eprintln!(
        "{repo}@{}: {} files ({}), {fetched} downloaded, {} already present{}",
        commit.as_deref().map(|c| &c[..c.len().min(12)]).unwrap_or(&a.revision),
        files.len(),
        human(total),
        files.len() - fetched,
        if skipped > 0 {
            format!(", {skipped} other-framework files skipped (--all-files to get them)")
        } else {
            String::new()
        }
    );
    let serve_name = if a.dir.is_none() {
        registry::KNOWN
            .iter()
            .find(|k| k.1 == dirname)
            .map(|k| k.0.to_string())
            .unwrap_or_else(|| format!("{dirname}={}", dest.display()))
    } else {
        format!("{dirname}={}", dest.display())
    };
    eprintln!("serve it with: deposium-embed serve --model {serve_name}");
    println!("{}", dest.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_repos_and_dirs() {
        assert_eq!(
            resolve_name("embeddinggemma").unwrap(),
            ("google/embeddinggemma-300m".into(), "embeddinggemma-300m".into())
        );
        assert_eq!(resolve_name("google/embeddinggemma-300m").unwrap().1, "embeddinggemma-300m");
        assert_eq!(resolve_name("potion").unwrap().0, "minishlab/potion-base-8M");
        assert_eq!(resolve_name("acme/my-model").unwrap(), ("acme/my-model".into(), "my-model".into()));
        assert!(resolve_name("no-such").unwrap_err().to_string().contains("google/embeddinggemma-300m"));
        assert!(resolve_name("minilm-int8-onnx").is_err());
        assert!(resolve_name("a/../b").is_err());
        assert!(resolve_name("a/b/c").is_err());
    }

    #[test]
    fn listing_and_filters() {
        let v = serde_json::json!({"sha": "abc", "siblings": [
            {"rfilename": "config.json", "size": 10},
            {"rfilename": "model.safetensors", "size": 99, "lfs": {"sha256": "A".repeat(64), "size": 99, "pointerSize": 134}},
            {"rfilename": "pytorch_model.bin", "size": 99},
            {"rfilename": "onnx/model.onnx", "size": 99},
            {"rfilename": "tf_model.h5", "size": 99},
            {"rfilename": "1_Pooling/config.json"}
        ]});
        let (c, files) = parse_listing(&v).unwrap();
        assert_eq!(c.as_deref(), Some("abc"));
        assert_eq!(files[1].sha256.as_deref(), Some("a".repeat(64).as_str()));
        let w: Vec<_> = wanted(&files, false).into_iter().map(|f| f.path).collect();
        assert_eq!(w, ["config.json", "model.safetensors", "1_Pooling/config.json"]);
        assert_eq!(wanted(&files, true).len(), 6);
        assert!(safe_rel("../x").is_err() && safe_rel("/etc/x").is_err() && safe_rel("a/b").is_ok());
        assert_eq!(encode("refs/pr/1", false), "refs%2Fpr%2F1");
        assert_eq!(encode("a b/c.json", true), "a%20b/c.json");
    }
}
