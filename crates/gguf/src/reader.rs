use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::{GgmlType, GgufError, GgufFile, TensorInfo, Value};

/// Limits that keep a hostile header from making us allocate without bound.
const MAX_STRING: u64 = 64 << 20;
const MAX_ARRAY: u64 = 16 << 20;
const MAX_KV: u64 = 1 << 20;
const MAX_TENSORS: u64 = 1 << 20;
const MAX_DIMS: u32 = 8;
const DEFAULT_ALIGNMENT: u64 = 32;

struct Cursor<'a> {
    r: BufReader<File>,
    pos: u64,
    size: u64,
    path: &'a Path,
}

impl Cursor<'_> {
    fn bytes(&mut self, n: u64, what: &str) -> Result<Vec<u8>, GgufError> {
        if self.pos.saturating_add(n) > self.size {
            return Err(GgufError::Truncated {
                path: self.path.to_path_buf(),
                what: what.to_string(),
                needed: self.pos.saturating_add(n),
                size: self.size,
            });
        }
        let mut buf = vec![0u8; usize::try_from(n).map_err(|_| self.corrupt("length overflows"))?];
        self.r.read_exact(&mut buf).map_err(|source| GgufError::Io { path: self.path.to_path_buf(), source })?;
        self.pos += n;
        Ok(buf)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let v = self.bytes(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&v);
        Ok(out)
    }
    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        if len > MAX_STRING {
            return Err(self.corrupt(&format!("{what} claims a length of {len} bytes")));
        }
        let b = self.bytes(len, what)?;
        // GGUF strings are UTF-8; be lenient like llama.cpp with the odd invalid vocab entry.
        Ok(String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }
    fn value(&mut self, ty: u32, what: &str, depth: u32) -> Result<Value, GgufError> {
        Ok(match ty {
            0 => Value::U8(u8::from_le_bytes(self.array(what)?)),
            1 => Value::I8(i8::from_le_bytes(self.array(what)?)),
            2 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            4 => Value::U32(self.u32(what)?),
            5 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            7 => {
                let b: [u8; 1] = self.array(what)?;
                match b[0] {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    v => return Err(self.corrupt(&format!("{what} has bool value {v}"))),
                }
            }
            8 => Value::String(self.string(what)?),
            9 => {
                if depth > 2 {
                    return Err(self.corrupt(&format!("{what} nests arrays too deeply")));
                }
                let elem = self.u32(what)?;
                let n = self.u64(what)?;
                if n > MAX_ARRAY {
                    return Err(self.corrupt(&format!("{what} claims {n} elements")));
                }
                let mut items = Vec::with_capacity(usize::try_from(n.min(1 << 16)).unwrap_or(0));
                for _ in 0..n {
                    items.push(self.value(elem, what, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            t => return Err(self.corrupt(&format!("{what} has unknown value type {t}"))),
        })
    }
    fn corrupt(&self, reason: &str) -> GgufError {
        GgufError::Corrupt { path: self.path.to_path_buf(), reason: reason.to_string() }
    }
}

pub(crate) fn read(path: &Path) -> Result<GgufFile, GgufError> {
    let file = File::open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => GgufError::NotFound { path: path.to_path_buf() },
        _ => GgufError::Io { path: path.to_path_buf(), source },
    })?;
    let meta = file.metadata().map_err(|source| GgufError::Io { path: path.to_path_buf(), source })?;
    if meta.is_dir() {
        return Err(GgufError::Corrupt { path: path.to_path_buf(), reason: "it is a directory".into() });
    }
    let size = meta.len();
    let mut c = Cursor { r: BufReader::with_capacity(1 << 16, file), pos: 0, size, path };

    if size < 4 {
        let magic = if size == 0 { Vec::new() } else { c.bytes(size, "magic")? };
        return Err(GgufError::NotGguf {
            path: path.to_path_buf(),
            magic: String::from_utf8_lossy(&magic).into_owned(),
        });
    }
    let magic: [u8; 4] = c.array("magic")?;
    if &magic != b"GGUF" {
        return Err(GgufError::NotGguf {
            path: path.to_path_buf(),
            magic: String::from_utf8_lossy(&magic).into_owned(),
        });
    }
    let version = c.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::UnsupportedVersion { path: path.to_path_buf(), version });
    }
    let n_tensors = c.u64("tensor count")?;
    let n_kv = c.u64("metadata count")?;
    if n_tensors > MAX_TENSORS || n_kv > MAX_KV {
        return Err(c.corrupt(&format!("header claims {n_tensors} tensors and {n_kv} metadata keys")));
    }

    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        let key = c.string(&format!("metadata key #{i}"))?;
        let ty = c.u32(&format!("type of {key}"))?;
        let value = c.value(ty, &key, 0)?;
        metadata.insert(key, value);
    }

    let mut tensors = Vec::with_capacity(usize::try_from(n_tensors).unwrap_or(0));
    for i in 0..n_tensors {
        let name = c.string(&format!("tensor #{i} name"))?;
        let n_dims = c.u32(&format!("tensor {name}"))?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(c.corrupt(&format!("tensor {name} has {n_dims} dimensions")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64(&format!("tensor {name}"))?);
        }
        if dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d)).is_none() {
            return Err(c.corrupt(&format!("tensor {name} has more elements than fit in 64 bits: {dims:?}")));
        }
        let ggml_type = GgmlType(c.u32(&format!("tensor {name}"))?);
        let offset = c.u64(&format!("tensor {name}"))?;
        tensors.push(TensorInfo { name, dims, ggml_type, offset });
    }

    let alignment = metadata.get("general.alignment").and_then(Value::as_u64).unwrap_or(DEFAULT_ALIGNMENT);
    if alignment == 0 || !alignment.is_power_of_two() {
        return Err(c.corrupt(&format!("general.alignment is {alignment}")));
    }
    let data_offset = c.pos.div_ceil(alignment) * alignment;

    for t in &tensors {
        let Some(bytes) = t.n_bytes() else { continue };
        let end = data_offset.saturating_add(t.offset).saturating_add(bytes);
        if end > size {
            return Err(GgufError::Truncated {
                path: path.to_path_buf(),
                what: format!("tensor {}", t.name),
                needed: end,
                size,
            });
        }
    }

    Ok(GgufFile { version, metadata, tensors, data_offset, file_size: size })
}
