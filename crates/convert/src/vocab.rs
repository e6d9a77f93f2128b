//! Token classes read from a tokenizer.json vocabulary.
use anyhow::{bail, Context, Result};

/// Ids of the tokens made of one character repeated (at least twice): `----`, `====`, `▁▁▁▁`, `\n\n`, `xxxxxxxx`, in
/// id order. Documents repeat them back to back (rules, tables, indentation, placeholders), so the rounding error of
/// their table rows adds up instead of averaging out over different tokens.
pub fn repeated_char_ids(tokenizer_json: &[u8]) -> Result<Vec<u32>> {
    let t: serde_json::Value = serde_json::from_slice(tokenizer_json).context("parsing tokenizer.json")?;
    let vocab = &t["model"]["vocab"];
    let entries: Vec<(&str, u64)> = match vocab {
        // BPE and WordPiece: {token: id}.
        serde_json::Value::Object(m) => m.iter().filter_map(|(k, v)| Some((k.as_str(), v.as_u64()?))).collect(),
        // Unigram: [[token, score], ...] in id order.
        serde_json::Value::Array(a) => {
            a.iter().enumerate().filter_map(|(i, e)| Some((e.get(0)?.as_str()?, i as u64))).collect()
        }
        _ => bail!("tokenizer.json has no model.vocab"),
    };
    let mut ids: Vec<u32> =
        entries.into_iter().filter(|(tok, _)| is_repeated_char(tok)).map(|(_, id)| id as u32).collect();
    ids.sort_unstable();
    Ok(ids)
}

fn is_repeated_char(tok: &str) -> bool {
    let mut c = tok.chars();
    match (c.next(), c.next()) {
        (Some(a), Some(b)) => a == b && c.all(|x| x == a),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tokens_of_one_repeated_character() {
        let bpe = r#"{"model": {"type": "BPE", "vocab": {"a": 0, "aa": 1, "ab": 2, "▁▁": 3, "\n\n\n": 4,
            "xxxxxxxx": 7, "—": 8, "——": 9, "éé": 10, "": 11}}}"#;
        assert_eq!(repeated_char_ids(bpe.as_bytes()).unwrap(), vec![1, 3, 4, 7, 9, 10]);
        let unigram =
            r#"{"model": {"type": "Unigram", "vocab": [["<s>", 0.0], ["==", -1.0], ["=", -2.0], ["==", -3.0]]}}"#;
        assert_eq!(repeated_char_ids(unigram.as_bytes()).unwrap(), vec![1, 3]);
        assert!(repeated_char_ids(br#"{"model": {}}"#).is_err());
        assert!(repeated_char_ids(b"not json").is_err());
    }
}
