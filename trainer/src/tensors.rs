//! The canonical tensor file behind model files and checkpoints: the safetensors layout
//! (8-byte little-endian header length, JSON header, raw little-endian data) with every choice
//! fixed, so equal contents give equal bytes: keys sorted, tensors stored in key order with no
//! gaps, metadata as sorted string pairs, header padded with spaces to 8 bytes. Any safetensors
//! reader opens these files; the reader here also refuses anything non-canonical or out of bounds,
//! which is how a corrupt checkpoint is told apart from a mismatching one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Why bytes are not a canonical tensor file.
#[derive(Debug, thiserror::Error)]
#[error("not a valid tensor file: {0}")]
pub struct FormatError(pub String);

/// A tensor's elements.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// 32-bit floats.
    F32(Vec<f32>),
    /// 32-bit signed integers.
    I32(Vec<i32>),
}

impl Data {
    fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::I32(v) => v.len(),
        }
    }
}

/// A named tensor's shape and elements.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Row-major elements.
    pub data: Data,
}

/// Metadata and tensors, both sorted by key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TensorFile {
    /// String metadata (`__metadata__`).
    pub metadata: BTreeMap<String, String>,
    /// Tensors by name.
    pub tensors: BTreeMap<String, Entry>,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum HeaderEntry {
    Tensor {
        dtype: String,
        shape: Vec<usize>,
        data_offsets: [usize; 2],
    },
    Metadata(BTreeMap<String, String>),
}

const MAX_HEADER: u64 = 16 << 20;

impl TensorFile {
    /// Adds an f32 tensor.
    pub fn put_f32(&mut self, name: &str, shape: Vec<usize>, data: Vec<f32>) {
        self.tensors.insert(
            name.to_owned(),
            Entry {
                shape,
                data: Data::F32(data),
            },
        );
    }

    /// Adds an i32 tensor.
    pub fn put_i32(&mut self, name: &str, shape: Vec<usize>, data: Vec<i32>) {
        self.tensors.insert(
            name.to_owned(),
            Entry {
                shape,
                data: Data::I32(data),
            },
        );
    }

    /// An f32 tensor by name, with its shape.
    pub fn f32(&self, name: &str) -> Result<(&[usize], &[f32]), FormatError> {
        match self.tensors.get(name) {
            Some(Entry {
                shape,
                data: Data::F32(v),
            }) => Ok((shape, v)),
            Some(_) => Err(FormatError(format!("tensor {name:?} is not F32"))),
            None => Err(FormatError(format!("tensor {name:?} is missing"))),
        }
    }

    /// An i32 tensor by name, with its shape.
    pub fn i32(&self, name: &str) -> Result<(&[usize], &[i32]), FormatError> {
        match self.tensors.get(name) {
            Some(Entry {
                shape,
                data: Data::I32(v),
            }) => Ok((shape, v)),
            Some(_) => Err(FormatError(format!("tensor {name:?} is not I32"))),
            None => Err(FormatError(format!("tensor {name:?} is missing"))),
        }
    }

    /// A metadata value by key.
    pub fn meta(&self, key: &str) -> Result<&str, FormatError> {
        self.metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| FormatError(format!("metadata {key:?} is missing")))
    }

    /// The canonical bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut header = BTreeMap::new();
        if !self.metadata.is_empty() {
            header.insert(
                "__metadata__".to_owned(),
                HeaderEntry::Metadata(self.metadata.clone()),
            );
        }
        let mut offset = 0;
        for (name, e) in &self.tensors {
            let len = e.data.len() * 4;
            let dtype = match e.data {
                Data::F32(_) => "F32",
                Data::I32(_) => "I32",
            };
            header.insert(
                name.clone(),
                HeaderEntry::Tensor {
                    dtype: dtype.to_owned(),
                    shape: e.shape.clone(),
                    data_offsets: [offset, offset + len],
                },
            );
            offset += len;
        }
        let mut json = serde_json::to_vec(&header).unwrap_or_default();
        while (json.len() + 8) % 8 != 0 {
            json.push(b' ');
        }
        let mut out = Vec::with_capacity(8 + json.len() + offset);
        out.extend_from_slice(&(json.len() as u64).to_le_bytes());
        out.extend_from_slice(&json);
        for e in self.tensors.values() {
            match &e.data {
                Data::F32(v) => v
                    .iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
                Data::I32(v) => v
                    .iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            }
        }
        out
    }

    /// Parses canonical bytes; anything else is a [`FormatError`].
    pub fn from_bytes(bytes: &[u8]) -> Result<TensorFile, FormatError> {
        let bad = |m: String| FormatError(m);
        let len_bytes: [u8; 8] = bytes
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("shorter than its 8-byte header length".into()))?;
        let header_len = u64::from_le_bytes(len_bytes);
        if header_len > MAX_HEADER || header_len > (bytes.len() - 8) as u64 {
            return Err(bad(format!("header length {header_len} is out of bounds")));
        }
        let header_end = 8 + header_len as usize;
        let header: BTreeMap<String, HeaderEntry> = serde_json::from_slice(&bytes[8..header_end])
            .map_err(|e| bad(format!("header: {e}")))?;
        let data = &bytes[header_end..];
        let mut file = TensorFile::default();
        let mut expect = 0usize;
        for (name, entry) in header {
            match entry {
                HeaderEntry::Metadata(m) if name == "__metadata__" => file.metadata = m,
                HeaderEntry::Metadata(_) => return Err(bad(format!("{name:?} is not a tensor"))),
                HeaderEntry::Tensor {
                    dtype,
                    shape,
                    data_offsets: [start, end],
                } => {
                    let count = shape
                        .iter()
                        .try_fold(1usize, |a, &d| a.checked_mul(d))
                        .ok_or_else(|| bad(format!("{name:?}: shape overflows")))?;
                    if start != expect
                        || end < start
                        || end - start != count.saturating_mul(4)
                        || end > data.len()
                    {
                        return Err(bad(format!(
                            "{name:?}: data offsets [{start}, {end}] do not fit shape {shape:?}"
                        )));
                    }
                    expect = end;
                    let raw = &data[start..end];
                    let words = raw.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]);
                    let data = match dtype.as_str() {
                        "F32" => Data::F32(words.map(f32::from_le_bytes).collect()),
                        "I32" => Data::I32(words.map(i32::from_le_bytes).collect()),
                        other => {
                            return Err(bad(format!("{name:?}: dtype {other} is not F32/I32")));
                        }
                    };
                    file.tensors.insert(name, Entry { shape, data });
                }
            }
        }
        if expect != data.len() {
            return Err(bad(format!(
                "{} trailing byte(s) after the last tensor",
                data.len() - expect
            )));
        }
        if file.to_bytes() != bytes {
            return Err(bad("not in canonical form".into()));
        }
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TensorFile {
        let mut f = TensorFile::default();
        f.metadata.insert("z".into(), "last".into());
        f.metadata.insert("a".into(), "first".into());
        f.put_f32("w", vec![2, 2], vec![1.0, -2.5, 0.0, 3.25]);
        f.put_i32("b", vec![3], vec![1, -1, 7]);
        f
    }

    #[test]
    fn bytes_are_canonical_and_round_trip() {
        let bytes = sample().to_bytes();
        let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
        assert_eq!((8 + header_len) % 8, 0, "data starts 8-byte aligned");
        let header = std::str::from_utf8(&bytes[8..8 + header_len]).expect("utf8");
        assert!(
            header.starts_with(r#"{"__metadata__":{"a":"first","z":"last"},"b":{"dtype":"I32""#)
        );
        assert_eq!(TensorFile::from_bytes(&bytes).expect("parses"), sample());
    }

    #[test]
    fn damaged_files_are_refused() {
        let bytes = sample().to_bytes();
        for cut in [0, 7, 12, bytes.len() - 1] {
            assert!(
                TensorFile::from_bytes(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut long = bytes.clone();
        long.extend_from_slice(&[0; 4]);
        assert!(TensorFile::from_bytes(&long).is_err());
        let mut huge = bytes.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(TensorFile::from_bytes(&huge).is_err());
        let mut json = bytes;
        json[10] = b'!';
        assert!(TensorFile::from_bytes(&json).is_err());
    }
}
