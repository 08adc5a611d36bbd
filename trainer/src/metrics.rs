//! Held-out metrics, in f64 and row order so they are reproducible too.

use serde::{Deserialize, Serialize};

/// Metrics on the test split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum Metrics {
    /// Classifier metrics; precision/recall/F1 are for the second class when there are two
    /// (the positive label), macro averages otherwise; ROC AUC likewise (one-vs-rest macro).
    Classification {
        /// Rows evaluated.
        rows: usize,
        /// Share predicted right.
        accuracy: f64,
        /// Precision.
        precision: f64,
        /// Recall.
        recall: f64,
        /// F1 score.
        f1: f64,
        /// Area under the ROC curve.
        roc_auc: f64,
        /// Mean negative log-likelihood (probabilities clipped at 1e-15).
        log_loss: f64,
    },
    /// Regressor metrics.
    Regression {
        /// Rows evaluated.
        rows: usize,
        /// Mean squared error.
        mse: f64,
        /// Coefficient of determination.
        r2: f64,
    },
}

/// Classification metrics from class probabilities `[rows, classes]` and true class indices.
pub fn classification(probabilities: &[Vec<f64>], truth: &[usize], classes: usize) -> Metrics {
    let rows = truth.len();
    let predicted: Vec<usize> = probabilities.iter().map(|p| argmax(p)).collect();
    let right = predicted.iter().zip(truth).filter(|(p, t)| p == t).count();
    let per_class = |c: usize| {
        let tp = (0..rows)
            .filter(|&i| predicted[i] == c && truth[i] == c)
            .count() as f64;
        let fp = (0..rows)
            .filter(|&i| predicted[i] == c && truth[i] != c)
            .count() as f64;
        let fneg = (0..rows)
            .filter(|&i| predicted[i] != c && truth[i] == c)
            .count() as f64;
        let precision = if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 };
        let recall = if tp + fneg > 0.0 {
            tp / (tp + fneg)
        } else {
            0.0
        };
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        let scores: Vec<f64> = probabilities.iter().map(|p| p[c]).collect();
        let positive: Vec<bool> = truth.iter().map(|&t| t == c).collect();
        (precision, recall, f1, auc(&scores, &positive))
    };
    let (precision, recall, f1, roc_auc) = if classes == 2 {
        per_class(1)
    } else {
        let all: Vec<_> = (0..classes).map(per_class).collect();
        let mean =
            |f: fn(&(f64, f64, f64, f64)) -> f64| all.iter().map(f).sum::<f64>() / classes as f64;
        (mean(|m| m.0), mean(|m| m.1), mean(|m| m.2), mean(|m| m.3))
    };
    let log_loss = probabilities
        .iter()
        .zip(truth)
        .map(|(p, &t)| -libm::log(p[t].clamp(1e-15, 1.0)))
        .sum::<f64>()
        / rows.max(1) as f64;
    Metrics::Classification {
        rows,
        accuracy: right as f64 / rows.max(1) as f64,
        precision,
        recall,
        f1,
        roc_auc,
        log_loss,
    }
}

/// Regression metrics.
pub fn regression(predicted: &[f64], truth: &[f64]) -> Metrics {
    let n = truth.len().max(1) as f64;
    let mse = predicted
        .iter()
        .zip(truth)
        .map(|(p, t)| (p - t) * (p - t))
        .sum::<f64>()
        / n;
    let mean = truth.iter().sum::<f64>() / n;
    let var = truth.iter().map(|t| (t - mean) * (t - mean)).sum::<f64>() / n;
    Metrics::Regression {
        rows: truth.len(),
        mse,
        r2: if var > 0.0 { 1.0 - mse / var } else { 0.0 },
    }
}

/// Index of the largest value, the first on ties.
pub fn argmax(p: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in p.iter().enumerate() {
        if *v > p[best] {
            best = i;
        }
    }
    best
}

/// ROC AUC by the rank-sum (Mann-Whitney) statistic, ties counted half; 0.5 when one side is
/// empty.
pub fn auc(scores: &[f64], positive: &[bool]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    let mut ranks = vec![0f64; scores.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            ranks[order[k]] = rank;
        }
        i = j + 1;
    }
    let pos = positive.iter().filter(|&&p| p).count() as f64;
    let neg = positive.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return 0.5;
    }
    let sum: f64 = ranks
        .iter()
        .zip(positive)
        .filter(|(_, p)| **p)
        .map(|(r, _)| r)
        .sum();
    (sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(
            auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]),
            0.75
        );
        assert_eq!(auc(&[0.5, 0.5], &[false, true]), 0.5);
        let p = vec![
            vec![0.9, 0.1],
            vec![0.2, 0.8],
            vec![0.6, 0.4],
            vec![0.3, 0.7],
        ];
        let Metrics::Classification {
            accuracy,
            precision,
            recall,
            ..
        } = classification(&p, &[0, 1, 1, 0], 2)
        else {
            panic!("classification")
        };
        assert_eq!((accuracy, precision, recall), (0.5, 0.5, 0.5));
        let Metrics::Regression { mse, r2, .. } = regression(&[1.0, 2.0, 3.0], &[1.0, 2.0, 4.0])
        else {
            panic!("regression")
        };
        assert!((mse - 1.0 / 3.0).abs() < 1e-12);
        assert!((r2 - (1.0 - (1.0 / 3.0) / (14.0 / 9.0))).abs() < 1e-12);
    }
}
