//! The release tarball runs on a clean machine with no environment variables: `scripts/release.sh --package-only`
//! packages the binary cargo built for the tests (the LTO build of `make release` is too slow for CI, and the
//! packaging is the same), the tarball is unpacked into a temp dir and run under `env -i` with a fresh HOME, so the
//! only ONNX Runtime it can find is the one bundled beside the binary.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Tmp(PathBuf);

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn clean_run(exe: &Path, home: &Path, args: &[&str]) -> Output {
    Command::new(exe).env_clear().env("PATH", "/usr/bin:/bin").env("HOME", home).args(args).output().unwrap()
}

fn vector(o: &Output) -> Vec<f32> {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = String::from_utf8_lossy(&o.stdout);
    let v: Vec<f32> = serde_json::from_str(s.lines().next().expect("a vector")).unwrap();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((n - 1.0).abs() < 1e-4, "unit norm, got {n}");
    v
}

#[test]
fn tarball_runs_with_no_environment() {
    common::require_model("potion-base-8M");
    common::require_model("all-MiniLM-L6-v2");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = Tmp(std::env::temp_dir().join(format!("deposium-release-test-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&tmp.0);
    std::fs::create_dir_all(&tmp.0).unwrap();

    let out = Command::new("bash")
        .arg(root.join("scripts/release.sh"))
        .args(["--package-only", env!("CARGO_BIN_EXE_deposium-embed"), "--out"])
        .arg(tmp.0.join("dist"))
        .env("DEPOSIUM_HOME", deposium_engine::paths::home())
        .output()
        .unwrap();
    assert!(out.status.success(), "release.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    let tarball = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().lines().last().unwrap());
    let version = env!("CARGO_PKG_VERSION");
    let name = format!("deposium-embed-{version}-linux-x86_64");
    assert_eq!(tarball.file_name().unwrap().to_string_lossy(), format!("{name}.tar.gz"));
    assert!(tarball.with_extension("gz.sha256").exists());

    let listing = Command::new("tar").arg("tzf").arg(&tarball).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    for f in [
        "deposium-embed",
        "deposium-embed-v3",
        "libonnxruntime.so.1",
        "LICENSE",
        "NOTICE",
        "README.txt",
        "licenses/onnxruntime/LICENSE",
        "licenses/onnxruntime/ThirdPartyNotices.txt",
    ] {
        assert!(listing.lines().any(|l| l == format!("{name}/{f}")), "{f} not in the tarball:\n{listing}");
    }

    let unpacked = tmp.0.join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    let st = Command::new("tar").arg("xzf").arg(&tarball).arg("-C").arg(&unpacked).status().unwrap();
    assert!(st.success());
    let dir = unpacked.join(&name);
    let exe = dir.join("deposium-embed");
    let home = tmp.0.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let models = deposium_engine::paths::models_dir();

    // Model2Vec: no ONNX Runtime involved.
    let spec = format!("potion-base-8M={}", models.join("potion-base-8M").display());
    assert_eq!(vector(&clean_run(&exe, &home, &["embed", "--model", &spec, "hello"])).len(), 256);

    // ONNX: converted into $HOME/.cache/deposium/converted, run by the bundled libonnxruntime.so.1 (a fresh
    // HOME has no other: $DEPOSIUM_HOME/onnxruntime does not exist there).
    let spec = format!("all-MiniLM-L6-v2={}", models.join("all-MiniLM-L6-v2").display());
    let v = vector(&clean_run(&exe, &home, &["embed", "--model", &spec, "hello"]));
    assert_eq!(v.len(), 384);
    assert!(home.join(".cache/deposium/converted").is_dir());

    // The launcher honours DEPOSIUM_CPU and says so when the build asked for is not in the package.
    let o = Command::new(&exe)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("DEPOSIUM_CPU", "v4")
        .arg("--version")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("deposium-embed-v4 is not in this package"));

    // Without the bundled library, the same command fails, clearly: the library beside the binary was the one used.
    std::fs::rename(dir.join("libonnxruntime.so.1"), dir.join("moved-away.so")).unwrap();
    let o = clean_run(&exe, &home, &["embed", "--model", &spec, "hello"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ONNX Runtime library not found"), "{err}");
    assert!(err.contains(&dir.join("libonnxruntime.so.1").display().to_string()), "{err}");
}
