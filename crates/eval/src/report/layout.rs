//! Deterministic label placement for the plots: each label tries candidate positions around its point, nearest
//! first, and takes the first whose box stays inside the plot and hits no placed label and no marker.

/// A box in pixels (y grows downwards).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x0: f64,
    pub y0: f64,
    pub x1: f64,
    pub y1: f64,
}

impl Rect {
    pub fn new(x0: f64, y0: f64, w: f64, h: f64) -> Self {
        Self { x0, y0, x1: x0 + w, y1: y0 + h }
    }

    /// The square around a marker of radius `r` at `(x, y)`.
    pub fn around(x: f64, y: f64, r: f64) -> Self {
        Self { x0: x - r, y0: y - r, x1: x + r, y1: y + r }
    }

    /// Strict overlap (touching edges do not count).
    pub fn intersects(&self, o: &Rect) -> bool {
        self.x0 < o.x1 && o.x0 < self.x1 && self.y0 < o.y1 && o.y0 < self.y1
    }

    pub fn inside(&self, o: &Rect) -> bool {
        self.x0 >= o.x0 && self.x1 <= o.x1 && self.y0 >= o.y0 && self.y1 <= o.y1
    }

    fn overlap_area(&self, o: &Rect) -> f64 {
        let w = (self.x1.min(o.x1) - self.x0.max(o.x0)).max(0.0);
        let h = (self.y1.min(o.y1) - self.y0.max(o.y0)).max(0.0);
        w * h
    }

    /// The point of the box nearest to `(x, y)` (where a leader line ends).
    pub fn nearest_point(&self, x: f64, y: f64) -> (f64, f64) {
        (x.clamp(self.x0, self.x1), y.clamp(self.y0, self.y1))
    }
}

/// Width and height of `text` in a sans-serif font of `px` pixels, on the safe side: 0.6 em per character
/// (DejaVu Sans digits are 0.64 em, lower case 0.5–0.6), 1.25 em line height.
pub fn text_box(text: &str, px: f64) -> (f64, f64) {
    (text.chars().count() as f64 * 0.6 * px, 1.25 * px)
}

/// One label to place next to its point.
#[derive(Debug, Clone)]
pub struct Label {
    pub anchor: (f64, f64),
    pub size: (f64, f64),
    /// Try the left side first (labels then point towards the plot's middle).
    pub prefer_left: bool,
}

/// Boxes for `labels`, in order. Markers (`obstacles`) and earlier labels are avoided, then leader lines through
/// labels; every box stays inside `bounds` where it fits. When no candidate is free, the one with the least
/// overlap (then fewest crossings) is taken.
pub fn place_labels(labels: &[Label], obstacles: &[Rect], bounds: Rect, gap: f64) -> Vec<Rect> {
    let mut placed: Vec<Rect> = Vec::with_capacity(labels.len());
    // Leader lines of the labels placed so far (anchor → nearest point of the box).
    let mut leaders: Vec<((f64, f64), (f64, f64))> = Vec::new();
    for l in labels {
        let (ax, ay) = l.anchor;
        let (w, h) = l.size;
        let mut best: Option<(f64, Rect)> = None;
        for c in candidates(ax, ay, w, h, gap, l.prefer_left) {
            if !c.inside(&bounds) {
                continue;
            }
            let overlap: f64 = placed.iter().chain(obstacles).map(|o| c.overlap_area(o)).sum();
            // Then, a leader line should cross no label: this one's across placed labels, earlier ones across this.
            let lead = ((ax, ay), c.nearest_point(ax, ay));
            let crossings = placed.iter().filter(|p| segment_hits(lead, p)).count()
                + leaders.iter().filter(|&&s| segment_hits(s, &c)).count();
            let cost = overlap * 1e6 + crossings as f64;
            if cost == 0.0 {
                best = Some((0.0, c));
                break;
            }
            if best.is_none_or(|(b, _)| cost < b) {
                best = Some((cost, c));
            }
        }
        // Nothing fits inside the bounds: right of the point, clamped into them.
        let rect = best.map(|(_, r)| r).unwrap_or_else(|| {
            let x0 = (ax + gap).min(bounds.x1 - w).max(bounds.x0);
            let y0 = (ay - h / 2.0).min(bounds.y1 - h).max(bounds.y0);
            Rect::new(x0, y0, w, h)
        });
        leaders.push(((ax, ay), rect.nearest_point(ax, ay)));
        placed.push(rect);
    }
    placed
}

/// Whether the segment passes through the inside of `r` (sampled every pixel or so).
fn segment_hits(((x0, y0), (x1, y1)): ((f64, f64), (f64, f64)), r: &Rect) -> bool {
    let steps = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
    (0..=steps).any(|k| {
        let t = k as f64 / steps as f64;
        let (x, y) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
        x > r.x0 && x < r.x1 && y > r.y0 && y < r.y1
    })
}

/// Candidate boxes around `(ax, ay)`, nearest first: beside the point (preferred side first), above and below,
/// then the same shifted by whole label heights up and down, further out each ring.
fn candidates(ax: f64, ay: f64, w: f64, h: f64, gap: f64, prefer_left: bool) -> Vec<Rect> {
    let right = ax + gap;
    let left = ax - gap - w;
    let sides = if prefer_left { [left, right] } else { [right, left] };
    let mut out = Vec::new();
    for ring in 0..12 {
        let dx = ring as f64 * 0.5 * gap;
        for &x in &sides {
            let x = if x < ax { x - dx } else { x + dx };
            if ring == 0 {
                out.push(Rect::new(x, ay - h / 2.0, w, h));
            }
            for k in [ring as f64, -(ring as f64)] {
                let shift = if ring == 0 { 0.6 * h } else { (ring as f64 + 0.6) * h };
                let dy = if k >= 0.0 { shift } else { -shift };
                out.push(Rect::new(x, ay - h / 2.0 + dy, w, h));
            }
        }
        // Centred above / below.
        let off = gap + ring as f64 * h;
        out.push(Rect::new(ax - w / 2.0, ay - off - h, w, h));
        out.push(Rect::new(ax - w / 2.0, ay + off, w, h));
    }
    out
}

/// Spread values (label centres on one axis) so that neighbours are at least `min_gap` apart, moving each as
/// little as possible and keeping their order; the result stays within `lo..=hi` where there is room.
pub fn spread_1d(values: &[f64], min_gap: f64, lo: f64, hi: f64) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut pos: Vec<f64> = idx.iter().map(|&i| values[i].clamp(lo, hi)).collect();
    // Push down (increasing), then back up from the end, then down again from the start.
    for i in 1..pos.len() {
        pos[i] = pos[i].max(pos[i - 1] + min_gap);
    }
    if let Some(last) = pos.last_mut() {
        *last = last.min(hi);
    }
    for i in (0..pos.len().saturating_sub(1)).rev() {
        pos[i] = pos[i].min(pos[i + 1] - min_gap);
    }
    if let Some(first) = pos.first_mut() {
        *first = first.max(lo);
    }
    for i in 1..pos.len() {
        pos[i] = pos[i].max(pos[i - 1] + min_gap);
    }
    let mut out = vec![0.0; values.len()];
    for (k, &i) in idx.iter().enumerate() {
        out[i] = pos[k];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_overlap(boxes: &[Rect]) {
        for (i, a) in boxes.iter().enumerate() {
            for b in &boxes[i + 1..] {
                assert!(!a.intersects(b), "{a:?} overlaps {b:?}");
            }
        }
    }

    #[test]
    fn close_points_get_disjoint_labels() {
        // int8 and int4 at almost the same place, their cross-lingual points too, plus a far point.
        let points = [(400.0, 200.0), (404.0, 203.0), (402.0, 260.0), (405.0, 262.0), (120.0, 420.0), (401.0, 201.0)];
        let bounds = Rect::new(60.0, 20.0, 800.0, 520.0);
        let labels: Vec<Label> = points
            .iter()
            .enumerate()
            .map(|(i, &anchor)| Label {
                anchor,
                size: text_box(&format!("embeddinggemma:int{i} (0.851, 3.18 ms)"), 14.0),
                prefer_left: anchor.0 > 460.0,
            })
            .collect();
        let markers: Vec<Rect> = points.iter().map(|&(x, y)| Rect::around(x, y, 7.0)).collect();
        let boxes = place_labels(&labels, &markers, bounds, 10.0);
        no_overlap(&boxes);
        for (b, m) in boxes.iter().zip(&markers) {
            assert!(b.inside(&bounds), "{b:?}");
            for other in &markers {
                assert!(!b.intersects(other), "label {b:?} covers marker {other:?} ({m:?})");
            }
        }
        // No leader line runs through another label.
        for (i, (b, l)) in boxes.iter().zip(&labels).enumerate() {
            let lead = (l.anchor, b.nearest_point(l.anchor.0, l.anchor.1));
            for (j, other) in boxes.iter().enumerate() {
                assert!(i == j || !segment_hits(lead, other), "leader {i} crosses label {j}");
            }
        }
        // The lone point keeps its label right beside it.
        let lone = boxes[4];
        assert!((lone.x0 - 130.0).abs() < 1e-9 && (lone.y0 + lone.y1) / 2.0 == 420.0, "{lone:?}");
    }

    #[test]
    fn placement_is_deterministic() {
        let labels: Vec<Label> = (0..8)
            .map(|i| Label { anchor: (300.0 + i as f64, 300.0), size: text_box("a label", 14.0), prefer_left: false })
            .collect();
        let bounds = Rect::new(0.0, 0.0, 600.0, 600.0);
        let a = place_labels(&labels, &[], bounds, 8.0);
        assert_eq!(a, place_labels(&labels, &[], bounds, 8.0));
        no_overlap(&a);
    }

    #[test]
    fn spread_keeps_order_and_gap() {
        let v = [0.70, 0.703, 0.697, 0.713, 0.723, 0.506];
        let px: Vec<f64> = v.iter().map(|y| 500.0 - y * 500.0).collect();
        let s = spread_1d(&px, 16.0, 20.0, 480.0);
        let mut sorted: Vec<(f64, f64)> = px.iter().copied().zip(s.iter().copied()).collect();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        for w in sorted.windows(2) {
            assert!(w[1].1 - w[0].1 >= 16.0 - 1e-9, "{sorted:?}");
        }
        // A value with room around it does not move.
        assert_eq!(s[5], px[5]);
    }
}
