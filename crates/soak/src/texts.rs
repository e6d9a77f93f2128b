//! Texts for load: distinct texts of 1 … ~2048 tokens built from the STS Benchmark sentences.
use std::collections::HashSet;
use std::path::Path;

use deposium_test_support::Rng;

/// Sentences of an STS TSV file (`score<TAB>sentence1<TAB>sentence2`, a header line), deduplicated, in order.
pub fn load_sts(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        for s in line.split('\t').skip(1).take(2) {
            let s = s.trim();
            if !s.is_empty() && seen.insert(s.to_string()) {
                out.push(s.to_string());
            }
        }
    }
    anyhow::ensure!(out.len() >= 100, "{}: only {} sentences", path.display(), out.len());
    Ok(out)
}

/// English subword tokenizers give about this many tokens per whitespace word.
const TOKENS_PER_WORD: f64 = 1.3;

/// `n` target lengths in tokens, spread log-uniformly (stratified) over `1..=max_tokens`, in shuffled order.
pub fn target_lengths(n: usize, max_tokens: usize, rng: &mut Rng) -> Vec<usize> {
    let max = (max_tokens.max(1) as f64).ln();
    let mut v: Vec<usize> = (0..n)
        .map(|i| {
            let t = (max * (i as f64 + 0.5) / n as f64).exp().round() as usize;
            t.clamp(1, max_tokens.max(1))
        })
        .collect();
    // Always include the extremes.
    if n >= 2 {
        v[0] = 1;
        v[n - 1] = max_tokens.max(1);
    }
    for i in (1..v.len()).rev() {
        let j = rng.below(i + 1);
        v.swap(i, j);
    }
    v
}

/// A text of about `tokens` tokens: consecutive sentences from a random start, cut at a word boundary.
pub fn text_of(sentences: &[String], tokens: usize, rng: &mut Rng) -> String {
    let words_wanted = ((tokens as f64 / TOKENS_PER_WORD).round() as usize).max(1);
    let mut words: Vec<&str> = Vec::with_capacity(words_wanted);
    let mut i = rng.below(sentences.len());
    while words.len() < words_wanted {
        words.extend(sentences[i].split_whitespace());
        i = (i + 1) % sentences.len();
    }
    words.truncate(words_wanted);
    words.join(" ")
}

/// `n` distinct texts with the given target lengths (retrying starts until each is new).
pub fn distinct_texts(
    sentences: &[String],
    lengths: &[usize],
    rng: &mut Rng,
    seen: &mut HashSet<String>,
) -> Vec<String> {
    lengths
        .iter()
        .map(|&len| {
            for attempt in 0.. {
                let mut t = text_of(sentences, len, rng);
                if attempt > 50 {
                    // Very short texts run out of distinct words: make one unique.
                    t = format!("{t} {attempt}");
                }
                if seen.insert(t.clone()) {
                    return t;
                }
            }
            unreachable!()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_span_the_range_and_texts_are_distinct() {
        let mut rng = Rng::new(3);
        let l = target_lengths(50, 2048, &mut rng);
        assert_eq!(l.len(), 50);
        assert_eq!(*l.iter().min().unwrap(), 1);
        assert_eq!(*l.iter().max().unwrap(), 2048);
        let sentences: Vec<String> = (0..200).map(|i| format!("Sentence number {i} says something.")).collect();
        let mut seen = HashSet::new();
        let texts = distinct_texts(&sentences, &l, &mut rng, &mut seen);
        assert_eq!(seen.len(), 50);
        assert!(texts.iter().all(|t| !t.is_empty()));
    }
}
