//! CART decision trees, grown breadth first one node expansion at a time so a checkpoint is
//! simply the tree so far: nodes not yet expanded are marked pending, and the samples of each are
//! recovered by routing the training rows down the tree. Impurities are f64 sums in row order;
//! thresholds are f32 midpoints that keep every left sample `<=` and every right sample `>`,
//! the comparison ONNX's `BRANCH_LEQ` makes.

use crate::spec::Criterion;
use crate::tensors::{FormatError, TensorFile};

/// A node is a split (feature >= 0), a leaf, or pending expansion.
pub const LEAF: i32 = -1;
/// Not yet expanded.
pub const PENDING: i32 = -2;

/// The tree in flat arrays (also its checkpoint and model-file form).
#[derive(Debug, Clone, PartialEq)]
pub struct Tree {
    /// Split feature, [`LEAF`] or [`PENDING`].
    pub feature: Vec<i32>,
    /// Split threshold (`x <= t` goes left).
    pub threshold: Vec<f32>,
    /// Left child index.
    pub left: Vec<i32>,
    /// Right child index.
    pub right: Vec<i32>,
    /// Depth of each node (root 0).
    pub depth: Vec<i32>,
    /// `outputs` values per node: class probabilities, or the mean target.
    pub value: Vec<f32>,
    /// Values per node.
    pub outputs: usize,
}

/// Growth limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Split criterion.
    pub criterion: Criterion,
    /// Deepest split depth.
    pub max_depth: u32,
    /// Fewest samples to split.
    pub min_samples_split: usize,
    /// Fewest samples per child.
    pub min_samples_leaf: usize,
}

/// Training inputs of a tree: raw f32 features and targets.
pub struct Samples<'a> {
    /// Row-major `[rows, width]`.
    pub x: &'a [f32],
    /// Class index or value per row.
    pub y: &'a [f32],
    /// Features per row.
    pub width: usize,
    /// Classes (0 for regression).
    pub classes: usize,
}

impl Tree {
    /// A root holding all samples, pending.
    pub fn root(s: &Samples<'_>) -> Tree {
        let all: Vec<usize> = (0..s.y.len()).collect();
        let mut t = Tree {
            feature: Vec::new(),
            threshold: Vec::new(),
            left: Vec::new(),
            right: Vec::new(),
            depth: Vec::new(),
            value: Vec::new(),
            outputs: s.classes.max(1),
        };
        t.push(s, &all, 0);
        t
    }

    fn push(&mut self, s: &Samples<'_>, rows: &[usize], depth: i32) -> i32 {
        self.feature.push(PENDING);
        self.threshold.push(0.0);
        self.left.push(-1);
        self.right.push(-1);
        self.depth.push(depth);
        if s.classes > 0 {
            let mut counts = vec![0f64; s.classes];
            for &r in rows {
                counts[s.y[r] as usize] += 1.0;
            }
            let n = rows.len().max(1) as f64;
            self.value.extend(counts.iter().map(|c| (c / n) as f32));
        } else {
            let sum: f64 = rows.iter().map(|&r| f64::from(s.y[r])).sum();
            self.value.push((sum / rows.len().max(1) as f64) as f32);
        }
        (self.feature.len() - 1) as i32
    }

    /// Nodes.
    pub fn len(&self) -> usize {
        self.feature.len()
    }

    /// Whether the tree has no node (never true for a grown tree).
    pub fn is_empty(&self) -> bool {
        self.feature.is_empty()
    }

    /// Whether nothing is left to expand.
    pub fn done(&self) -> bool {
        !self.feature.contains(&PENDING)
    }

    /// The node a row ends in.
    pub fn route(&self, row: &[f32]) -> usize {
        let mut n = 0usize;
        while self.feature[n] >= 0 {
            let f = self.feature[n] as usize;
            n = if row[f] <= self.threshold[n] {
                self.left[n]
            } else {
                self.right[n]
            } as usize;
        }
        n
    }

    /// The values of the leaf a row ends in.
    pub fn predict(&self, row: &[f32]) -> &[f32] {
        let n = self.route(row);
        &self.value[n * self.outputs..(n + 1) * self.outputs]
    }

    /// Expands up to `count` pending nodes in index (breadth-first) order; returns how many.
    pub fn grow(&mut self, s: &Samples<'_>, limits: &Limits, count: u64) -> u64 {
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); self.len()];
        for r in 0..s.y.len() {
            members[self.route(&s.x[r * s.width..(r + 1) * s.width])].push(r);
        }
        let mut done = 0;
        let mut next = 0usize;
        while done < count {
            let Some(node) = (next..self.len()).find(|&i| self.feature[i] == PENDING) else {
                break;
            };
            next = node + 1;
            let rows = std::mem::take(&mut members[node]);
            match self.best_split(s, limits, &rows, node) {
                None => self.feature[node] = LEAF,
                Some((f, t)) => {
                    let (l, r): (Vec<usize>, Vec<usize>) =
                        rows.iter().partition(|&&r| s.x[r * s.width + f] <= t);
                    let depth = self.depth[node] + 1;
                    let li = self.push(s, &l, depth);
                    let ri = self.push(s, &r, depth);
                    members.push(l);
                    members.push(r);
                    self.feature[node] = f as i32;
                    self.threshold[node] = t;
                    self.left[node] = li;
                    self.right[node] = ri;
                }
            }
            done += 1;
        }
        done
    }

    fn best_split(
        &self,
        s: &Samples<'_>,
        limits: &Limits,
        rows: &[usize],
        node: usize,
    ) -> Option<(usize, f32)> {
        let n = rows.len();
        if self.depth[node] as u32 >= limits.max_depth
            || n < limits.min_samples_split
            || n < 2 * limits.min_samples_leaf
        {
            return None;
        }
        let mut total = Stats::new(s.classes);
        for &r in rows {
            total.add(s.y[r]);
        }
        let parent = total.impurity(limits.criterion);
        if parent <= 0.0 {
            return None;
        }
        let mut best: Option<(f64, usize, f32)> = None;
        let mut order = rows.to_vec();
        for f in 0..s.width {
            let key = |r: usize| s.x[r * s.width + f];
            order.sort_by(|&a, &b| key(a).total_cmp(&key(b)).then(a.cmp(&b)));
            let mut left = Stats::new(s.classes);
            let mut right = total.clone();
            for i in 1..n {
                let moved = s.y[order[i - 1]];
                left.add(moved);
                right.remove(moved);
                let (a, b) = (key(order[i - 1]), key(order[i]));
                if a == b || i < limits.min_samples_leaf || n - i < limits.min_samples_leaf {
                    continue;
                }
                let child = (i as f64 * left.impurity(limits.criterion)
                    + (n - i) as f64 * right.impurity(limits.criterion))
                    / n as f64;
                let gain = parent - child;
                if gain > 0.0 && best.is_none_or(|(g, _, _)| gain > g) {
                    let mut t = a + (b - a) / 2.0;
                    if t >= b || t < a {
                        t = a;
                    }
                    best = Some((gain, f, t));
                }
            }
        }
        best.map(|(_, f, t)| (f, t))
    }

    /// The tree as tensors (checkpoint and model file), with the expansions done in metadata.
    pub fn to_file(&self, steps: u64) -> TensorFile {
        let mut f = TensorFile::default();
        f.metadata.insert("kind".into(), "checkpoint".into());
        f.metadata.insert("step".into(), steps.to_string());
        let n = self.len();
        f.put_i32("tree.feature", vec![n], self.feature.clone());
        f.put_f32("tree.threshold", vec![n], self.threshold.clone());
        f.put_i32("tree.left", vec![n], self.left.clone());
        f.put_i32("tree.right", vec![n], self.right.clone());
        f.put_i32("tree.depth", vec![n], self.depth.clone());
        f.put_f32("tree.value", vec![n, self.outputs], self.value.clone());
        f
    }

    /// Restores a tree, checking that it is well formed (children in range and after their
    /// parent, features below `width`).
    pub fn from_file(f: &TensorFile, width: usize) -> Result<(Tree, u64), FormatError> {
        let steps: u64 = f
            .meta("step")?
            .parse()
            .map_err(|_| FormatError("step is not a number".into()))?;
        let (_, feature) = f.i32("tree.feature")?;
        let (_, threshold) = f.f32("tree.threshold")?;
        let (_, left) = f.i32("tree.left")?;
        let (_, right) = f.i32("tree.right")?;
        let (_, depth) = f.i32("tree.depth")?;
        let (vshape, value) = f.f32("tree.value")?;
        let n = feature.len();
        let outputs = vshape.get(1).copied().unwrap_or(0);
        if n == 0
            || [threshold.len(), left.len(), right.len(), depth.len()] != [n; 4]
            || vshape.first() != Some(&n)
            || outputs == 0
        {
            return Err(FormatError("tree arrays disagree in length".into()));
        }
        for i in 0..n {
            let ok = match feature[i] {
                PENDING | LEAF => true,
                f => {
                    (f as usize) < width
                        && [left[i], right[i]]
                            .iter()
                            .all(|&c| c as usize > i && (c as usize) < n)
                }
            };
            if !ok {
                return Err(FormatError(format!("tree node {i} is malformed")));
            }
        }
        Ok((
            Tree {
                feature: feature.to_vec(),
                threshold: threshold.to_vec(),
                left: left.to_vec(),
                right: right.to_vec(),
                depth: depth.to_vec(),
                value: value.to_vec(),
                outputs,
            },
            steps,
        ))
    }
}

#[derive(Clone)]
enum Stats {
    Counts(Vec<f64>, f64),
    Moments { n: f64, sum: f64, sq: f64 },
}

impl Stats {
    fn new(classes: usize) -> Stats {
        if classes > 0 {
            Stats::Counts(vec![0.0; classes], 0.0)
        } else {
            Stats::Moments {
                n: 0.0,
                sum: 0.0,
                sq: 0.0,
            }
        }
    }

    fn add(&mut self, y: f32) {
        match self {
            Stats::Counts(c, n) => {
                c[y as usize] += 1.0;
                *n += 1.0;
            }
            Stats::Moments { n, sum, sq } => {
                let y = f64::from(y);
                *n += 1.0;
                *sum += y;
                *sq += y * y;
            }
        }
    }

    fn remove(&mut self, y: f32) {
        match self {
            Stats::Counts(c, n) => {
                c[y as usize] -= 1.0;
                *n -= 1.0;
            }
            Stats::Moments { n, sum, sq } => {
                let y = f64::from(y);
                *n -= 1.0;
                *sum -= y;
                *sq -= y * y;
            }
        }
    }

    fn impurity(&self, criterion: Criterion) -> f64 {
        match (self, criterion) {
            (Stats::Counts(c, n), Criterion::Entropy) => -c
                .iter()
                .filter(|&&k| k > 0.0)
                .map(|k| (k / n) * libm::log2(k / n))
                .sum::<f64>(),
            (Stats::Counts(c, n), _) => 1.0 - c.iter().map(|k| (k / n) * (k / n)).sum::<f64>(),
            (Stats::Moments { n, sum, sq }, _) => {
                let mean = sum / n;
                (sq / n - mean * mean).max(0.0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(criterion: Criterion) -> Limits {
        Limits {
            criterion,
            max_depth: 4,
            min_samples_split: 2,
            min_samples_leaf: 1,
        }
    }

    #[test]
    fn a_separable_problem_is_learnt_and_growth_in_pieces_equals_growth_at_once() {
        // class = inside the box x0 > 0.3, x1 < 0.6
        let mut s = crate::rng::Stream::new(2, "t", 0);
        let x: Vec<f32> = (0..400).map(|_| s.unit_f32()).collect();
        let y: Vec<f32> = x
            .chunks(2)
            .map(|r| f32::from(u8::from(r[0] > 0.3 && r[1] < 0.6)))
            .collect();
        let samples = Samples {
            x: &x,
            y: &y,
            width: 2,
            classes: 2,
        };
        for criterion in [Criterion::Gini, Criterion::Entropy] {
            let mut whole = Tree::root(&samples);
            whole.grow(&samples, &limits(criterion), u64::MAX);
            assert!(whole.done());
            let right = x
                .chunks(2)
                .zip(&y)
                .filter(|(r, y)| (whole.predict(r)[1] > 0.5) == (**y > 0.5))
                .count();
            assert_eq!(right, 200, "{criterion:?}");
            let mut pieces = Tree::root(&samples);
            while !pieces.done() {
                let file = pieces.to_file(0).to_bytes();
                let (back, _) = Tree::from_file(&TensorFile::from_bytes(&file).expect("bytes"), 2)
                    .expect("tree");
                pieces = back;
                pieces.grow(&samples, &limits(criterion), 3);
            }
            assert_eq!(pieces, whole);
        }
    }

    #[test]
    fn regression_trees_fit_a_step_and_malformed_trees_are_refused() {
        let x: Vec<f32> = (0..20).map(|i| i as f32).collect();
        let y: Vec<f32> = x
            .iter()
            .map(|&v| if v < 10.0 { 1.0 } else { 5.0 })
            .collect();
        let s = Samples {
            x: &x,
            y: &y,
            width: 1,
            classes: 0,
        };
        let mut t = Tree::root(&s);
        t.grow(&s, &limits(Criterion::Mse), u64::MAX);
        assert_eq!(t.threshold[0], 9.5);
        assert_eq!(t.predict(&[3.0]), [1.0]);
        let mut f = t.to_file(3);
        f.put_i32("tree.left", vec![t.len()], vec![0; t.len()]);
        assert!(Tree::from_file(&f, 1).is_err());
    }
}
