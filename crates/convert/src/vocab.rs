//! Token classes read from a tokenizer.json vocabulary.
use anyhow::{bail, Context, Result};

/// Ids of the tokens made of one character repeated (at least twice): `----`, `====`, `▁▁▁▁`, `\n\n`, `xxxxxxxx`.
/// Documents repeat them back to back (rules, tables, indentation, placeholders), so the rounding error of their table
/// rows adds up instead of averaging out over different tokens. Sorted `[start, end)` ranges.
pub fn repeated_char_ranges(tokenizer_json: &[u8]) -> Result<Vec<[u32; 2]>> {
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
    let mut ids: Vec<u32> = entries
        .into_iter()
        .filter(|(tok, _)| {
            let mut c = tok.chars();
            c.next().is_some_and(|first| {
                let rest: Vec<char> = c.collect();
                !rest.is_empty() && rest.iter().all(|&x| x == first)
            })
        })
        .map(|(_, id)| id as u32)
        .collect();
    ids.sort_unstable();
    let mut ranges: Vec<[u32; 2]> = Vec::new();
    for id in ids {
        match ranges.last_mut() {
            Some(r) if r[1] == id => r[1] = id + 1,
            _ => ranges.push([id, id + 1]),
        }
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tokens_of_one_repeated_character() {
        let bpe = r#"{"model": {"type": "BPE", "vocab": {"a": 0, "aa": 1, "ab": 2, "▁▁": 3, "\n\n\n": 4,
            "xxxxxxxx": 7, "—": 8, "——": 9, "éé": 10, "": 11}}}"#;
        assert_eq!(repeated_char_ranges(bpe.as_bytes()).unwrap(), vec![[1, 2], [3, 5], [7, 8], [9, 11]]);
        let unigram =
            r#"{"model": {"type": "Unigram", "vocab": [["<s>", 0.0], ["==", -1.0], ["=", -2.0], ["==", -3.0]]}}"#;
        assert_eq!(repeated_char_ranges(unigram.as_bytes()).unwrap(), vec![[1, 2], [3, 4]]);
        assert!(repeated_char_ranges(br#"{"model": {}}"#).is_err());
        assert!(repeated_char_ranges(b"not json").is_err());
    }
}
