//! Correlation and similarity functions, in f64, with errors instead of NaN.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum MetricError {
    LengthMismatch {
        left: usize,
        right: usize,
    },
    TooShort(usize),
    /// All values of one side are equal: the correlation is undefined.
    Constant {
        side: &'static str,
        n: usize,
        value: f64,
    },
    NonFinite {
        side: &'static str,
        index: usize,
    },
}

impl fmt::Display for MetricError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricError::LengthMismatch { left, right } => {
                write!(f, "correlation of series of different lengths ({left} vs {right})")
            }
            MetricError::TooShort(n) => write!(f, "correlation needs at least 2 pairs, got {n}"),
            MetricError::Constant { side, n, value } => {
                write!(f, "correlation undefined: the {side} series is constant (all {n} values are {value})")
            }
            MetricError::NonFinite { side, index } => {
                write!(f, "non-finite value at index {index} of the {side} series")
            }
        }
    }
}

impl std::error::Error for MetricError {}

fn check(x: &[f64], y: &[f64]) -> Result<(), MetricError> {
    if x.len() != y.len() {
        return Err(MetricError::LengthMismatch { left: x.len(), right: y.len() });
    }
    if x.len() < 2 {
        return Err(MetricError::TooShort(x.len()));
    }
    for (side, s) in [("first", x), ("second", y)] {
        if let Some(index) = s.iter().position(|v| !v.is_finite()) {
            return Err(MetricError::NonFinite { side, index });
        }
    }
    Ok(())
}

/// Pearson's correlation coefficient.
pub fn pearson(x: &[f64], y: &[f64]) -> Result<f64, MetricError> {
    check(x, y)?;
    let n = x.len() as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (&a, &b) in x.iter().zip(y) {
        let (da, db) = (a - mx, b - my);
        sxy += da * db;
        sxx += da * da;
        syy += db * db;
    }
    for (side, s, ss) in [("first", x, sxx), ("second", y, syy)] {
        // Exactly equal values give a sum of squares of exactly zero.
        if ss == 0.0 || s.iter().all(|&v| v == s[0]) {
            return Err(MetricError::Constant { side, n: s.len(), value: s[0] });
        }
    }
    Ok((sxy / (sxx.sqrt() * syy.sqrt())).clamp(-1.0, 1.0))
}

/// Ranks starting at 1; tied values get the average of the ranks they span (like scipy's `rankdata`).
pub fn ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut out = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i + 1;
        while j < order.len() && x[order[j]] == x[order[i]] {
            j += 1;
        }
        // Positions i..j (0-based) hold ranks i+1..=j; their mean is (i + 1 + j) / 2.
        let rank = (i + 1 + j) as f64 / 2.0;
        for &k in &order[i..j] {
            out[k] = rank;
        }
        i = j;
    }
    out
}

/// Spearman's rank correlation: Pearson on average ranks.
pub fn spearman(x: &[f64], y: &[f64]) -> Result<f64, MetricError> {
    check(x, y)?;
    pearson(&ranks(x), &ranks(y)).map_err(|e| match e {
        // Report the constant value itself, not its rank.
        MetricError::Constant { side, n, .. } => {
            let s = if side == "first" { x } else { y };
            MetricError::Constant { side, n, value: s[0] }
        }
        e => e,
    })
}

/// Cosine similarity in f64 (0 when either vector is zero): the engine's.
pub use deposium_engine::cosine_f64 as cosine;

pub fn euclidean(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum::<f64>().sqrt()
}

pub fn manhattan(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).abs()).sum()
}

/// MTEB's STS scores for one set of pairs: similarity = cosine, -euclidean, -manhattan.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StsScores {
    pub pearson: f64,
    pub spearman: f64,
    pub cosine_pearson: f64,
    pub cosine_spearman: f64,
    pub euclidean_pearson: f64,
    pub euclidean_spearman: f64,
    pub manhattan_pearson: f64,
    pub manhattan_spearman: f64,
    pub main_score: f64,
}

/// Score embedded pairs against gold scores.
pub fn sts_scores(left: &[&[f32]], right: &[&[f32]], gold: &[f64]) -> Result<StsScores, MetricError> {
    if left.len() != right.len() {
        return Err(MetricError::LengthMismatch { left: left.len(), right: right.len() });
    }
    let pairs = || left.iter().zip(right);
    let cos: Vec<f64> = pairs().map(|(a, b)| cosine(a, b)).collect();
    let euc: Vec<f64> = pairs().map(|(a, b)| -euclidean(a, b)).collect();
    let man: Vec<f64> = pairs().map(|(a, b)| -manhattan(a, b)).collect();
    let cosine_pearson = pearson(&cos, gold)?;
    let cosine_spearman = spearman(&cos, gold)?;
    Ok(StsScores {
        pearson: cosine_pearson,
        spearman: cosine_spearman,
        cosine_pearson,
        cosine_spearman,
        euclidean_pearson: pearson(&euc, gold)?,
        euclidean_spearman: spearman(&euc, gold)?,
        manhattan_pearson: pearson(&man, gold)?,
        manhattan_spearman: spearman(&man, gold)?,
        main_score: cosine_spearman,
    })
}

/// Nearest-rank percentile of unsorted samples (p in 0..=100).
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn ranks_average_ties() {
        assert_eq!(ranks(&[10.0, 20.0, 20.0, 30.0]), vec![1.0, 2.5, 2.5, 4.0]);
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 3.0, 2.0]), vec![4.0, 1.0, 4.0, 4.0, 2.0]);
    }

    #[test]
    fn pearson_known_values() {
        // Perfect linear relations.
        assert!(close(pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]).unwrap(), 1.0));
        assert!(close(pearson(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap(), -1.0));
        // scipy.stats.pearsonr([1,2,3,4,5], [2,4,5,4,5]) = 0.7745966692414834
        let r = pearson(&[1.0, 2.0, 3.0, 4.0, 5.0], &[2.0, 4.0, 5.0, 4.0, 5.0]).unwrap();
        assert!((r - 0.7745966692414834).abs() < 1e-12, "{r}");
    }

    #[test]
    fn spearman_with_ties() {
        // scipy.stats.spearmanr([1,2,2,3,4], [1,3,2,2,5]) = 0.7631578947368421
        let r = spearman(&[1.0, 2.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 2.0, 5.0]).unwrap();
        assert!((r - 0.763_157_894_736_842_1).abs() < 1e-12, "{r}");
        // scipy.stats.spearmanr([1,2,3,4,5,6], [2,1,4,3,6,5]) = 0.8285714285714286
        let r = spearman(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2.0, 1.0, 4.0, 3.0, 6.0, 5.0]).unwrap();
        assert!((r - 0.8285714285714286).abs() < 1e-12, "{r}");
        // Monotonic but non-linear: Spearman 1, Pearson below 1.
        let x = [1.0, 2.0, 3.0, 4.0];
        let y = [1.0, 8.0, 27.0, 64.0];
        assert!(close(spearman(&x, &y).unwrap(), 1.0));
        assert!(pearson(&x, &y).unwrap() < 0.99);
    }

    #[test]
    fn constant_input_is_an_error() {
        let e = spearman(&[1.0, 2.0, 3.0], &[0.5, 0.5, 0.5]).unwrap_err();
        assert_eq!(e, MetricError::Constant { side: "second", n: 3, value: 0.5 });
        assert!(e.to_string().contains("constant"), "{e}");
        let e = pearson(&[7.0, 7.0], &[1.0, 2.0]).unwrap_err();
        assert!(matches!(e, MetricError::Constant { side: "first", .. }), "{e}");
    }

    #[test]
    fn length_mismatch_and_short_inputs() {
        let e = spearman(&[1.0, 2.0, 3.0], &[1.0, 2.0]).unwrap_err();
        assert_eq!(e, MetricError::LengthMismatch { left: 3, right: 2 });
        assert!(e.to_string().contains("3 vs 2"));
        assert_eq!(pearson(&[1.0], &[1.0]).unwrap_err(), MetricError::TooShort(1));
        assert!(matches!(pearson(&[1.0, f64::NAN], &[1.0, 2.0]), Err(MetricError::NonFinite { index: 1, .. })));
    }

    #[test]
    fn distances_and_sts_scores() {
        let a: &[f32] = &[1.0, 0.0];
        let b: &[f32] = &[0.0, 1.0];
        assert!(close(cosine(a, b), 0.0));
        assert!(close(euclidean(a, b), 2f64.sqrt()));
        assert!(close(manhattan(a, b), 2.0));
        let v = [[1.0f32, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]];
        let left: Vec<&[f32]> = vec![&v[0]; 4];
        let right: Vec<&[f32]> = v.iter().map(|x| &x[..]).collect();
        // Gold similarity falls as the right vector turns away: every metric ranks perfectly.
        let s = sts_scores(&left, &right, &[5.0, 4.0, 2.0, 0.0]).unwrap();
        assert!(close(s.cosine_spearman, 1.0) && close(s.euclidean_spearman, 1.0) && close(s.manhattan_spearman, 1.0));
        assert_eq!(s.main_score, s.cosine_spearman);
    }

    #[test]
    fn percentiles() {
        let s = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&s, 50.0), 3.0);
        assert_eq!(percentile(&s, 95.0), 5.0);
        assert_eq!(percentile(&s, 0.0), 1.0);
    }
}
