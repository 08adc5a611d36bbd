//! The Merkle tree over a table's rows that a listing commits to (`rows_root`), so a buyer can
//! check rows shown before paying (a preview) and the file after paying against one root.
//!
//! A leaf is `SHA-256(0x00 || index as u64 big-endian || cells)`, where `cells` is each cell's
//! text as read (trimmed, unquoted) preceded by its length as u32 big-endian: the same rows read
//! from CSV, JSON lines or a JSON array give the same leaves. Inner nodes are
//! `SHA-256(0x01 || left || right)` and the tree is RFC 6962's (the left subtree holds the
//! largest power of two below the size), so the root is built in one pass with O(log n) memory
//! and a row's proof is its audit path.

use sha2::{Digest, Sha256};

/// A node or leaf hash.
pub type Hash = [u8; 32];

/// The leaf of row `index` (0-based, header excluded) with these cells.
pub fn leaf<S: AsRef<str>>(index: u64, cells: &[S]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(index.to_be_bytes());
    for c in cells {
        let c = c.as_ref().as_bytes();
        h.update((c.len() as u32).to_be_bytes());
        h.update(c);
    }
    h.finalize().into()
}

fn node(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of a tree built one leaf at a time.
#[derive(Clone, Debug, Default)]
pub struct RootBuilder {
    /// Complete subtrees, largest first: (leaves, hash).
    stack: Vec<(u64, Hash)>,
    leaves: u64,
}

impl RootBuilder {
    /// Adds the next leaf.
    pub fn push(&mut self, leaf: Hash) {
        let mut size = 1u64;
        let mut hash = leaf;
        while let Some((top, left)) = self.stack.last().copied() {
            if top != size {
                break;
            }
            self.stack.pop();
            hash = node(&left, &hash);
            size += top;
        }
        self.stack.push((size, hash));
        self.leaves += 1;
    }

    /// Leaves so far.
    pub fn len(&self) -> u64 {
        self.leaves
    }

    /// Whether no leaf was added.
    pub fn is_empty(&self) -> bool {
        self.leaves == 0
    }

    /// The root (of no leaves: SHA-256 of nothing, as RFC 6962 has it).
    pub fn root(&self) -> Hash {
        let mut it = self.stack.iter().rev();
        let Some((_, last)) = it.next() else {
            return Sha256::digest([]).into();
        };
        it.fold(*last, |right, (_, left)| node(left, &right))
    }
}

/// The root of `leaves`.
pub fn root(leaves: &[Hash]) -> Hash {
    let mut b = RootBuilder::default();
    for l in leaves {
        b.push(*l);
    }
    b.root()
}

/// The largest power of two below `n` (n >= 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// The audit path of leaf `index` among `leaves`, bottom up (None: no such leaf).
pub fn proof(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    let mut path = Vec::new();
    let (mut lo, mut hi, mut at) = (0usize, leaves.len(), index);
    // Top down, then reversed.
    while hi - lo > 1 {
        let k = split(hi - lo);
        if at < k {
            path.push(root(&leaves[lo + k..hi]));
            hi = lo + k;
        } else {
            path.push(root(&leaves[lo..lo + k]));
            lo += k;
            at -= k;
        }
    }
    path.reverse();
    Some(path)
}

/// Whether `leaf` is leaf `index` of a tree of `size` leaves whose root is `root`, by its audit
/// path (RFC 6962 §2.1.1).
pub fn verify(root: &Hash, size: u64, index: u64, leaf: &Hash, path: &[Hash]) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if snode == 0 {
            return false;
        }
        if fnode % 2 == 1 || fnode == snode {
            r = node(p, &r);
            while fnode % 2 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && r == *root
}

/// The seed a preview's rows are drawn from: the hash of the block after the request (which
/// nobody knew when the request was made), bound to the dataset and the requester, so requests
/// in one block draw different rows.
pub fn preview_seed(block_hash: &[u8], dataset: u64, requester: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(b"neurodata preview seed");
    h.update(block_hash);
    h.update(dataset.to_be_bytes());
    h.update(requester);
    h.finalize().into()
}

/// The rows a preview shows: `count` distinct indices below `rows`, drawn from `seed`
/// ([`preview_seed`]). The gateway and the client draw the same ones.
pub fn draw_rows(seed: &[u8], rows: u64, count: u32) -> Vec<u64> {
    let want = u64::from(count).min(rows) as usize;
    let mut drawn: Vec<u64> = Vec::with_capacity(want);
    let mut counter = 0u64;
    while drawn.len() < want {
        let mut h = Sha256::new();
        h.update(b"neurodata preview");
        h.update(seed);
        h.update(counter.to_be_bytes());
        let d: Hash = h.finalize().into();
        counter += 1;
        let mut first = [0u8; 8];
        first.copy_from_slice(&d[..8]);
        let index = u64::from_be_bytes(first) % rows;
        if !drawn.contains(&index) {
            drawn.push(index);
        }
    }
    drawn.sort_unstable();
    drawn
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6962's MTH, recursively: what the one-pass builder must equal.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => Sha256::digest([]).into(),
            1 => leaves[0],
            n => {
                let k = split(n);
                node(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf(i, &[format!("{i}"), "x".into()]))
            .collect()
    }

    #[test]
    fn the_one_pass_root_is_rfc_6962s_and_every_proof_verifies() {
        for n in 0..40u64 {
            let l = leaves(n);
            let r = root(&l);
            assert_eq!(r, mth(&l), "n = {n}");
            for (i, leaf) in l.iter().enumerate() {
                let p = proof(&l, i).unwrap();
                assert!(verify(&r, n, i as u64, leaf, &p), "n = {n}, i = {i}");
                // The same leaf claimed at another index fails (the leaf hashes its index too,
                // so a row cannot be moved; the size comes from the listing).
                if n > 1 {
                    assert!(!verify(&r, n, (i as u64 + 1) % n, leaf, &p), "n {n} i {i}");
                }
            }
        }
    }

    #[test]
    fn draws_are_distinct_bounded_and_follow_the_seed() {
        let a = draw_rows(b"block A", 50, 10);
        assert_eq!(a.len(), 10);
        assert!(a.windows(2).all(|w| w[0] < w[1]) && a.iter().all(|i| *i < 50));
        assert_eq!(a, draw_rows(b"block A", 50, 10));
        assert_ne!(a, draw_rows(b"block B", 50, 10));
        assert_eq!(
            draw_rows(b"x", 3, 10),
            vec![0, 1, 2],
            "never more than the rows"
        );
        assert!(draw_rows(b"x", 0, 10).is_empty());
    }

    #[test]
    fn a_row_not_in_the_table_or_a_changed_cell_does_not_verify() {
        let l = leaves(10);
        let r = root(&l);
        let p = proof(&l, 3).unwrap();
        assert!(!verify(&r, 10, 3, &leaf(3, &["3", "y"]), &p));
        assert!(
            !verify(&r, 10, 3, &leaf(3, &["3x", ""]), &p),
            "cell boundaries count"
        );
        assert!(proof(&l, 10).is_none());
    }
}
