//! STS data: tab-separated files `score\tsentence1\tsentence2`, no quoting.
//!
//! A task `T` with split `S` is the file `T_S.tsv` (subset `default`) or the files `T_<subset>_S.tsv`
//! (e.g. `STS17_en-en_test.tsv`, subset `en-en`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct StsPair {
    pub score: f64,
    pub sentence1: String,
    pub sentence2: String,
}

/// One file of pairs.
#[derive(Debug, Clone)]
pub struct StsSubset {
    /// `default`, or the language pair (`en-en`, `es-en`...).
    pub name: String,
    pub path: PathBuf,
    pub pairs: Vec<StsPair>,
}

impl StsSubset {
    /// MTEB-style language codes (`eng-Latn`...) of the subset; English for `default`.
    pub fn languages(&self) -> Vec<String> {
        if self.name == "default" {
            return vec!["eng-Latn".into()];
        }
        self.name.split('-').map(iso_language).collect()
    }

    /// Two different languages (`en-ar`), as opposed to `en-en`.
    pub fn is_cross_lingual(&self) -> bool {
        is_cross_lingual(&self.name)
    }
}

pub fn is_cross_lingual(subset: &str) -> bool {
    matches!(subset.split_once('-'), Some((a, b)) if a != b)
}

fn iso_language(code: &str) -> String {
    let full = match code {
        "en" => "eng-Latn",
        "ar" => "ara-Arab",
        "es" => "spa-Latn",
        "tr" => "tur-Latn",
        "ko" => "kor-Hang",
        "de" => "deu-Latn",
        "fr" => "fra-Latn",
        "it" => "ita-Latn",
        "nl" => "nld-Latn",
        other => other,
    };
    full.to_string()
}

/// A task and the subsets found for it.
#[derive(Debug, Clone)]
pub struct StsTask {
    pub name: String,
    pub split: String,
    pub subsets: Vec<StsSubset>,
}

impl StsTask {
    pub fn n_pairs(&self) -> usize {
        self.subsets.iter().map(|s| s.pairs.len()).sum()
    }
}

/// Parse the content of one STS TSV file; `path` only names the file in errors.
pub fn parse_tsv(path: &Path, content: &str) -> Result<Vec<StsPair>> {
    let mut lines = content.split('\n').enumerate();
    let header = lines.next().map(|(_, l)| l.trim_end_matches('\r')).unwrap_or("");
    if header.split('\t').collect::<Vec<_>>() != ["score", "sentence1", "sentence2"] {
        bail!("{}:1: expected the header 'score<TAB>sentence1<TAB>sentence2', found {header:?}", path.display());
    }
    let mut pairs = Vec::new();
    for (i, line) in lines {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let lineno = i + 1;
        if fields.len() != 3 {
            bail!("{}:{lineno}: expected 3 tab-separated fields, found {}", path.display(), fields.len());
        }
        let score: f64 = fields[0]
            .trim()
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite())
            .with_context(|| format!("{}:{lineno}: bad score {:?}", path.display(), fields[0]))?;
        pairs.push(StsPair { score, sentence1: fields[1].to_string(), sentence2: fields[2].to_string() });
    }
    if pairs.is_empty() {
        bail!("{}: no pairs", path.display());
    }
    Ok(pairs)
}

pub fn read_tsv(path: &Path) -> Result<Vec<StsPair>> {
    let content = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_tsv(path, &content)
}

/// The data directory: `explicit`, else `../shared/data/sts` if it exists, else `$DEPOSIUM_STS_DATA`.
pub fn resolve_data_dir(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if !p.is_dir() {
            bail!("STS data directory {} does not exist", p.display());
        }
        return Ok(p.to_path_buf());
    }
    let default = PathBuf::from("../shared/data/sts");
    if default.is_dir() {
        return Ok(default);
    }
    if let Some(env) = std::env::var_os("DEPOSIUM_STS_DATA") {
        let p = PathBuf::from(env);
        if p.is_dir() {
            return Ok(p);
        }
        bail!("DEPOSIUM_STS_DATA={} is not a directory", p.display());
    }
    bail!("no STS data: pass --data DIR, or run from a directory with ../shared/data/sts, or set DEPOSIUM_STS_DATA")
}

/// Find and read the files of `task` in `dir`.
pub fn load_task(dir: &Path, task: &str, split: &str) -> Result<StsTask> {
    let single = dir.join(format!("{task}_{split}.tsv"));
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    if single.is_file() {
        files.push(("default".into(), single));
    } else {
        let (prefix, suffix) = (format!("{task}_"), format!("_{split}.tsv"));
        let entries = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
        for e in entries {
            let name = e?.file_name().to_string_lossy().to_string();
            if let Some(subset) = name.strip_prefix(&prefix).and_then(|r| r.strip_suffix(&suffix)) {
                if !subset.is_empty() && !subset.contains('_') {
                    files.push((subset.to_string(), dir.join(&name)));
                }
            }
        }
        files.sort();
    }
    if files.is_empty() {
        let mut available: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().to_string()).collect())
            .unwrap_or_default();
        available.retain(|n| n.ends_with(".tsv"));
        available.sort();
        bail!(
            "no file for task '{task}' split '{split}' in {} (looked for {task}_{split}.tsv and {task}_*_{split}.tsv; found: {})",
            dir.display(),
            available.join(", ")
        );
    }
    let subsets = files
        .into_iter()
        .map(|(name, path)| Ok(StsSubset { pairs: read_tsv(&path)?, name, path }))
        .collect::<Result<Vec<_>>>()?;
    Ok(StsTask { name: task.to_string(), split: split.to_string(), subsets })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_without_quote_handling() {
        let text = "score\tsentence1\tsentence2\n\
                    4.5\t\"Quoted\" start\tit's \"half\n\
                    0\t\t  spaces kept  \n";
        let pairs = parse_tsv(Path::new("x.tsv"), text).unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0].score, 4.5);
        assert_eq!(pairs[0].sentence1, "\"Quoted\" start");
        assert_eq!(pairs[0].sentence2, "it's \"half");
        assert_eq!(pairs[1].sentence1, "");
        assert_eq!(pairs[1].sentence2, "  spaces kept  ");
    }

    #[test]
    fn wrong_field_count_names_file_and_line() {
        let text = "score\tsentence1\tsentence2\n1\ta\tb\n2\tonly two\n";
        let e = parse_tsv(Path::new("data/STS_test.tsv"), text).unwrap_err().to_string();
        assert!(e.contains("data/STS_test.tsv:3"), "{e}");
        assert!(e.contains("expected 3 tab-separated fields, found 2"), "{e}");
        let text = "score\tsentence1\tsentence2\n1\ta\tb\tc\n";
        let e = parse_tsv(Path::new("f.tsv"), text).unwrap_err().to_string();
        assert!(e.contains("f.tsv:2") && e.contains("found 4"), "{e}");
    }

    #[test]
    fn bad_header_and_score() {
        let e = parse_tsv(Path::new("f.tsv"), "a,b,c\n1\tx\ty\n").unwrap_err().to_string();
        assert!(e.contains("f.tsv:1"), "{e}");
        let e = parse_tsv(Path::new("f.tsv"), "score\tsentence1\tsentence2\nhigh\tx\ty\n").unwrap_err().to_string();
        assert!(e.contains("f.tsv:2") && e.contains("bad score"), "{e}");
    }

    #[test]
    fn crlf_and_trailing_newlines() {
        let pairs = parse_tsv(Path::new("f.tsv"), "score\tsentence1\tsentence2\r\n1\ta\tb\r\n\n").unwrap();
        assert_eq!(pairs, vec![StsPair { score: 1.0, sentence1: "a".into(), sentence2: "b".into() }]);
    }

    #[test]
    fn finds_subsets() {
        let dir = std::env::temp_dir().join(format!("deposium-eval-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let body = "score\tsentence1\tsentence2\n1\ta\tb\n";
        for f in ["T_test.tsv", "M_en-en_test.tsv", "M_en-ar_test.tsv", "M_en-en_dev.tsv"] {
            std::fs::write(dir.join(f), body).unwrap();
        }
        let t = load_task(&dir, "T", "test").unwrap();
        assert_eq!(t.subsets.len(), 1);
        assert_eq!(t.subsets[0].name, "default");
        let m = load_task(&dir, "M", "test").unwrap();
        let names: Vec<&str> = m.subsets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["en-ar", "en-en"]);
        assert!(m.subsets[0].is_cross_lingual() && !m.subsets[1].is_cross_lingual());
        assert_eq!(m.subsets[0].languages(), ["eng-Latn", "ara-Arab"]);
        let e = load_task(&dir, "Nope", "test").unwrap_err().to_string();
        assert!(e.contains("Nope") && e.contains("T_test.tsv"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
