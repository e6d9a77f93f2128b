//! BEIR retrieval data: `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl` (`_id`, `text`) and
//! `qrels.tsv` or `qrels/<split>.tsv` (header `query-id<TAB>corpus-id<TAB>score`).
//!
//! Like MTEB: a document's text is `title + " " + text`, stripped; only queries named in the qrels are evaluated.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Fallback root of retrieval data sets (a folder of BEIR directories).
pub const RETRIEVAL_ROOT_ENV: &str = "DEPOSIUM_RETRIEVAL_DATA";

#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub id: String,
    /// `title + " " + text`, stripped.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub id: String,
    pub text: String,
    /// Graded relevance of corpus ids (as in the qrels file; > 0 is relevant).
    pub relevant: BTreeMap<String, i32>,
}

/// A retrieval task: the evaluated queries (those with qrels, file order) and the corpus (file order).
#[derive(Debug, Clone)]
pub struct RetrievalTask {
    pub name: String,
    pub split: String,
    pub dir: PathBuf,
    pub queries: Vec<Query>,
    pub corpus: Vec<Document>,
    /// True when `--max-queries` / `--max-corpus` cut the task.
    pub subset: bool,
}

/// Which slice of a task to load (for tests and quick looks).
#[derive(Debug, Clone, Copy, Default)]
pub struct Slice {
    /// The first N queries (file order) that have qrels.
    pub max_queries: Option<usize>,
    /// Their relevant documents plus the first other documents (file order) up to M in all.
    pub max_corpus: Option<usize>,
}

/// One JSON line's `_id` (a string, or a number written as one).
fn json_id(v: &serde_json::Value, path: &Path, lineno: usize) -> Result<String> {
    match v.get("_id") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
        Some(other) => bail!("{}:{lineno}: field '_id' must be a non-empty string, found {other}", path.display()),
        None => bail!("{}:{lineno}: missing field '_id'", path.display()),
    }
}

fn json_str<'a>(v: &'a serde_json::Value, field: &str, path: &Path, lineno: usize) -> Result<Option<&'a str>> {
    match v.get(field) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(other) => bail!("{}:{lineno}: field '{field}' must be a string, found {other}", path.display()),
    }
}

/// Parse JSON lines: (line number, object) for each non-blank line.
fn json_lines(path: &Path, content: &str) -> Result<Vec<(usize, serde_json::Value)>> {
    let mut out = Vec::new();
    for (i, line) in content.split('\n').enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{}:{}: malformed JSON", path.display(), i + 1))?;
        if !v.is_object() {
            bail!("{}:{}: expected a JSON object", path.display(), i + 1);
        }
        out.push((i + 1, v));
    }
    Ok(out)
}

/// `corpus.jsonl` content → documents; `path` only names the file in errors.
pub fn parse_corpus(path: &Path, content: &str) -> Result<Vec<Document>> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut docs = Vec::new();
    for (lineno, v) in json_lines(path, content)? {
        let id = json_id(&v, path, lineno)?;
        let title = json_str(&v, "title", path, lineno)?.unwrap_or("");
        let text = json_str(&v, "text", path, lineno)?
            .with_context(|| format!("{}:{lineno}: missing field 'text'", path.display()))?;
        if let Some(first) = seen.insert(id.clone(), lineno) {
            bail!("{}:{lineno}: duplicate document id {id:?} (first on line {first})", path.display());
        }
        docs.push(Document { id, text: format!("{title} {text}").trim().to_string() });
    }
    if docs.is_empty() {
        bail!("{}: empty corpus", path.display());
    }
    Ok(docs)
}

/// `queries.jsonl` content → (id, text), file order.
pub fn parse_queries(path: &Path, content: &str) -> Result<Vec<(String, String)>> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for (lineno, v) in json_lines(path, content)? {
        let id = json_id(&v, path, lineno)?;
        let text = json_str(&v, "text", path, lineno)?
            .with_context(|| format!("{}:{lineno}: missing field 'text'", path.display()))?;
        if let Some(first) = seen.insert(id.clone(), lineno) {
            bail!("{}:{lineno}: duplicate query id {id:?} (first on line {first})", path.display());
        }
        out.push((id, text.to_string()));
    }
    Ok(out)
}

/// One qrels line: (line number, query id, corpus id, score).
pub type QrelLine = (usize, String, String, i32);

/// `qrels.tsv` content (header `query-id<TAB>corpus-id<TAB>score`).
pub fn parse_qrels(path: &Path, content: &str) -> Result<Vec<QrelLine>> {
    let mut lines = content.split('\n').enumerate();
    let header = lines.next().map(|(_, l)| l.trim_end_matches('\r')).unwrap_or("");
    if header.split('\t').collect::<Vec<_>>() != ["query-id", "corpus-id", "score"] {
        bail!("{}:1: expected the header 'query-id<TAB>corpus-id<TAB>score', found {header:?}", path.display());
    }
    let mut out = Vec::new();
    for (i, line) in lines {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let lineno = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != 3 {
            bail!("{}:{lineno}: expected 3 tab-separated fields, found {}", path.display(), fields.len());
        }
        let (q, d) = (fields[0].trim(), fields[1].trim());
        if q.is_empty() || d.is_empty() {
            bail!("{}:{lineno}: empty query or corpus id", path.display());
        }
        let score: i32 = fields[2]
            .trim()
            .parse()
            .with_context(|| format!("{}:{lineno}: bad score {:?} (an integer)", path.display(), fields[2]))?;
        out.push((lineno, q.to_string(), d.to_string(), score));
    }
    if out.is_empty() {
        bail!("{}: no qrels", path.display());
    }
    Ok(out)
}

/// `dir/qrels.tsv`, else `dir/qrels/<split>.tsv`.
pub fn qrels_path(dir: &Path, split: &str) -> Result<PathBuf> {
    let flat = dir.join("qrels.tsv");
    if flat.is_file() {
        return Ok(flat);
    }
    let nested = dir.join("qrels").join(format!("{split}.tsv"));
    if nested.is_file() {
        return Ok(nested);
    }
    bail!("{}: no qrels file (looked for {} and {})", dir.display(), flat.display(), nested.display())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Is `dir` a BEIR directory (has `corpus.jsonl`)?
pub fn is_beir_dir(dir: &Path) -> bool {
    dir.join("corpus.jsonl").is_file()
}

/// Read and check a BEIR directory; `name` is the task name written into results.
pub fn load(dir: &Path, name: &str, split: &str, slice: Slice) -> Result<RetrievalTask> {
    if !dir.is_dir() {
        bail!("retrieval data directory {} does not exist", dir.display());
    }
    let corpus_path = dir.join("corpus.jsonl");
    let queries_path = dir.join("queries.jsonl");
    let qrels_path = qrels_path(dir, split)?;
    let corpus = parse_corpus(&corpus_path, &read(&corpus_path)?)?;
    let queries = parse_queries(&queries_path, &read(&queries_path)?)?;
    let qrels = parse_qrels(&qrels_path, &read(&qrels_path)?)?;
    build(name, split, dir, corpus, queries, &qrels, &qrels_path, slice)
}

/// Join queries and qrels, check every id, apply the slice.
#[allow(clippy::too_many_arguments)]
pub fn build(
    name: &str,
    split: &str,
    dir: &Path,
    corpus: Vec<Document>,
    queries: Vec<(String, String)>,
    qrels: &[QrelLine],
    qrels_path: &Path,
    slice: Slice,
) -> Result<RetrievalTask> {
    let doc_ids: HashMap<&str, usize> = corpus.iter().enumerate().map(|(i, d)| (d.id.as_str(), i)).collect();
    let query_ids: HashMap<&str, usize> = queries.iter().enumerate().map(|(i, q)| (q.0.as_str(), i)).collect();
    let mut rels: Vec<BTreeMap<String, i32>> = vec![BTreeMap::new(); queries.len()];
    for (lineno, q, d, score) in qrels {
        let Some(&qi) = query_ids.get(q.as_str()) else {
            bail!("{}:{lineno}: query id {q:?} is not in queries.jsonl", qrels_path.display());
        };
        if !doc_ids.contains_key(d.as_str()) {
            bail!("{}:{lineno}: corpus id {d:?} is not in corpus.jsonl", qrels_path.display());
        }
        if rels[qi].insert(d.clone(), *score).is_some() {
            bail!("{}:{lineno}: duplicate pair ({q}, {d})", qrels_path.display());
        }
    }
    let mut evaluated: Vec<Query> = queries
        .into_iter()
        .zip(rels)
        .filter(|(_, r)| !r.is_empty())
        .map(|((id, text), relevant)| Query { id, text, relevant })
        .collect();
    let mut corpus = corpus;
    let full = (evaluated.len(), corpus.len());
    if let Some(n) = slice.max_queries {
        evaluated.truncate(n.max(1));
    }
    if let Some(m) = slice.max_corpus {
        let keep_rel: std::collections::HashSet<&str> =
            evaluated.iter().flat_map(|q| q.relevant.keys().map(|s| s.as_str())).collect();
        let mut room = m.saturating_sub(corpus.iter().filter(|d| keep_rel.contains(d.id.as_str())).count());
        let keep: Vec<bool> = corpus
            .iter()
            .map(|d| {
                if keep_rel.contains(d.id.as_str()) {
                    true
                } else if room > 0 {
                    room -= 1;
                    true
                } else {
                    false
                }
            })
            .collect();
        let mut it = keep.into_iter();
        corpus.retain(|_| it.next().unwrap());
    }
    let subset = (evaluated.len(), corpus.len()) != full;
    Ok(RetrievalTask {
        name: name.to_string(),
        split: split.to_string(),
        dir: dir.to_path_buf(),
        queries: evaluated,
        corpus,
        subset,
    })
}

/// The root of retrieval data sets: `explicit`, else `../shared/data/retrieval` if it exists, else
/// `$DEPOSIUM_RETRIEVAL_DATA`. None when there is none.
pub fn resolve_root(explicit: Option<&Path>) -> Result<Option<PathBuf>> {
    if let Some(p) = explicit {
        if !p.is_dir() {
            bail!("retrieval data directory {} does not exist", p.display());
        }
        return Ok(Some(p.to_path_buf()));
    }
    let default = PathBuf::from("../shared/data/retrieval");
    if default.is_dir() {
        return Ok(Some(default));
    }
    if let Some(env) = std::env::var_os(RETRIEVAL_ROOT_ENV) {
        let p = PathBuf::from(env);
        if p.is_dir() {
            return Ok(Some(p));
        }
        bail!("{RETRIEVAL_ROOT_ENV}={} is not a directory", p.display());
    }
    Ok(None)
}

/// The BEIR directory of `task` under `root`: `root/<task>/`, or `root` itself when it is a BEIR directory
/// named `task`.
pub fn find_task(root: &Path, task: &str) -> Option<PathBuf> {
    let sub = root.join(task);
    if is_beir_dir(&sub) {
        return Some(sub);
    }
    let own = root.file_name().map(|n| n.to_string_lossy() == task).unwrap_or(false);
    (own && is_beir_dir(root)).then(|| root.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> &Path {
        Path::new(s)
    }

    #[test]
    fn corpus_text_is_title_space_text_stripped() {
        let c = "{\"_id\": \"1\", \"title\": \"A title.\", \"text\": \"Body text \"}\n\n\
                 {\"_id\": 2, \"title\": \"\", \"text\": \" only body\"}\n\
                 {\"_id\": \"3\", \"text\": \"no title\"}\n";
        let d = parse_corpus(p("c.jsonl"), c).unwrap();
        assert_eq!(d[0], Document { id: "1".into(), text: "A title. Body text".into() });
        assert_eq!(d[1], Document { id: "2".into(), text: "only body".into() });
        assert_eq!(d[2].text, "no title");
    }

    #[test]
    fn corpus_errors_name_file_and_line() {
        let e = parse_corpus(p("x/corpus.jsonl"), "{\"_id\": \"1\", \"text\": \"a\"}\n{\"_id\": \"2\", \"text\": }\n")
            .unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("x/corpus.jsonl:2: malformed JSON"), "{e}");
        let e = parse_corpus(p("c.jsonl"), "{\"_id\": \"1\", \"title\": \"t\"}\n").unwrap_err().to_string();
        assert!(e.contains("c.jsonl:1: missing field 'text'"), "{e}");
        let e = parse_corpus(p("c.jsonl"), "\n{\"title\": \"t\", \"text\": \"a\"}\n").unwrap_err().to_string();
        assert!(e.contains("c.jsonl:2: missing field '_id'"), "{e}");
        let e = parse_corpus(p("c.jsonl"), "{\"_id\": \"1\", \"text\": 5}\n").unwrap_err().to_string();
        assert!(e.contains("c.jsonl:1: field 'text' must be a string"), "{e}");
        let e = parse_corpus(p("c.jsonl"), "{\"_id\": \"1\", \"text\": \"a\"}\n{\"_id\": \"1\", \"text\": \"b\"}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.jsonl:2: duplicate document id \"1\" (first on line 1)"), "{e}");
        let e = parse_corpus(p("c.jsonl"), "[1, 2]\n").unwrap_err().to_string();
        assert!(e.contains("c.jsonl:1: expected a JSON object"), "{e}");
    }

    #[test]
    fn empty_corpus_is_an_error() {
        let e = parse_corpus(p("d/corpus.jsonl"), "\n  \n").unwrap_err().to_string();
        assert!(e.contains("d/corpus.jsonl: empty corpus"), "{e}");
    }

    #[test]
    fn queries_errors() {
        let q = parse_queries(p("q.jsonl"), "{\"_id\": \"q1\", \"text\": \"what?\", \"metadata\": {}}\n").unwrap();
        assert_eq!(q, vec![("q1".to_string(), "what?".to_string())]);
        let e = parse_queries(p("q.jsonl"), "{\"_id\": \"q1\"}\n").unwrap_err().to_string();
        assert!(e.contains("q.jsonl:1: missing field 'text'"), "{e}");
        let e =
            format!("{:#}", parse_queries(p("q.jsonl"), "{\"_id\": \"q1\", \"text\": \"a\"}\nnot json\n").unwrap_err());
        assert!(e.contains("q.jsonl:2: malformed JSON"), "{e}");
    }

    #[test]
    fn qrels_parse_and_errors() {
        let r = parse_qrels(p("qrels.tsv"), "query-id\tcorpus-id\tscore\r\n1\td1\t1\r\n\n2\td2\t2\n").unwrap();
        assert_eq!(r, vec![(2, "1".into(), "d1".into(), 1), (4, "2".into(), "d2".into(), 2)]);
        let e = parse_qrels(p("qrels.tsv"), "qid\tdid\tscore\n1\td\t1\n").unwrap_err().to_string();
        assert!(e.contains("qrels.tsv:1: expected the header"), "{e}");
        let e = parse_qrels(p("qrels.tsv"), "query-id\tcorpus-id\tscore\n1\td\t1\n1 d 1\n").unwrap_err().to_string();
        assert!(e.contains("qrels.tsv:3: expected 3 tab-separated fields, found 1"), "{e}");
        let e = format!("{:#}", parse_qrels(p("qrels.tsv"), "query-id\tcorpus-id\tscore\n1\td\thigh\n").unwrap_err());
        assert!(e.contains("qrels.tsv:2: bad score \"high\""), "{e}");
        let e = parse_qrels(p("qrels.tsv"), "query-id\tcorpus-id\tscore\n").unwrap_err().to_string();
        assert!(e.contains("no qrels"), "{e}");
    }

    fn docs(n: usize) -> Vec<Document> {
        (0..n).map(|i| Document { id: format!("d{i}"), text: format!("doc {i}") }).collect()
    }

    fn queries(n: usize) -> Vec<(String, String)> {
        (0..n).map(|i| (format!("q{i}"), format!("query {i}"))).collect()
    }

    #[test]
    fn qrels_naming_unknown_ids_are_errors() {
        let q = vec![(2, "q0".to_string(), "d9".to_string(), 1)];
        let e = build("T", "test", p("."), docs(3), queries(2), &q, p("T/qrels.tsv"), Slice::default()).unwrap_err();
        assert!(e.to_string().contains("T/qrels.tsv:2: corpus id \"d9\" is not in corpus.jsonl"), "{e}");
        let q = vec![(5, "qx".to_string(), "d1".to_string(), 1)];
        let e = build("T", "test", p("."), docs(3), queries(2), &q, p("T/qrels.tsv"), Slice::default()).unwrap_err();
        assert!(e.to_string().contains("T/qrels.tsv:5: query id \"qx\" is not in queries.jsonl"), "{e}");
    }

    #[test]
    fn only_queries_with_qrels_and_deterministic_slices() {
        // q1 has no qrels: not evaluated.
        let q = vec![
            (2, "q0".to_string(), "d7".to_string(), 1),
            (3, "q2".to_string(), "d5".to_string(), 1),
            (4, "q2".to_string(), "d9".to_string(), 2),
            (5, "q3".to_string(), "d1".to_string(), 1),
        ];
        let t = build("T", "test", p("."), docs(10), queries(4), &q, p("q.tsv"), Slice::default()).unwrap();
        let ids: Vec<&str> = t.queries.iter().map(|q| q.id.as_str()).collect();
        assert_eq!(ids, ["q0", "q2", "q3"]);
        assert_eq!(t.queries[1].relevant.get("d9"), Some(&2));
        assert!(!t.subset);
        let slice = Slice { max_queries: Some(2), max_corpus: Some(5) };
        let t = build("T", "test", p("."), docs(10), queries(4), &q, p("q.tsv"), slice).unwrap();
        let ids: Vec<&str> = t.queries.iter().map(|q| q.id.as_str()).collect();
        assert_eq!(ids, ["q0", "q2"]);
        // Relevant d5, d7, d9 kept, then the first two others in file order.
        let d: Vec<&str> = t.corpus.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(d, ["d0", "d1", "d5", "d7", "d9"]);
        assert!(t.subset);
    }

    #[test]
    fn load_reads_a_directory_with_nested_qrels() {
        let dir = std::env::temp_dir().join(format!("deposium-beir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("qrels")).unwrap();
        std::fs::write(dir.join("corpus.jsonl"), "{\"_id\": \"d1\", \"title\": \"T\", \"text\": \"x\"}\n").unwrap();
        std::fs::write(dir.join("queries.jsonl"), "{\"_id\": \"q1\", \"text\": \"y\"}\n").unwrap();
        let e = load(&dir, "X", "test", Slice::default()).unwrap_err().to_string();
        assert!(e.contains("no qrels file"), "{e}");
        std::fs::write(dir.join("qrels/test.tsv"), "query-id\tcorpus-id\tscore\nq1\td1\t1\n").unwrap();
        let t = load(&dir, "X", "test", Slice::default()).unwrap();
        assert_eq!((t.queries.len(), t.corpus.len()), (1, 1));
        std::fs::remove_file(dir.join("queries.jsonl")).unwrap();
        let e = load(&dir, "X", "test", Slice::default()).unwrap_err().to_string();
        assert!(e.contains("reading") && e.contains("queries.jsonl"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
