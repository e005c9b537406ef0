//! llama.cpp's serialized state of one sequence (`llama_state_seq_get_data`), taken apart into
//! per-token rows so that a prefix of it, or several pieces of it, can be put back together:
//! the prompt cache stores each prefix once and restores any prefix of a conversation.
//!
//! The layout (`llama_kv_cache::state_write` in the vendored llama.cpp, the same code as the
//! b11434 reference) with one KV stream per sequence:
//!
//! ```text
//! u32 magic (0xAF143CD8), i32 seq_id          (llama_context's own header)
//! u32 n_stream
//! per stream: u32 cell_count, then when > 0:
//!   cell_count x (i32 pos, u32 n_seq_id = 1, [12-byte ext when the model has one], i32 seq_id)
//!   u32 v_trans, u32 n_layer, u32 n_rot_k, u32 n_rot_v
//!   n_layer x (i32 k_type, u64 k_row_bytes, cell_count rows of K)
//!   per layer with V: (i32 v_type, u64 v_row_bytes, cell_count rows of V)   (v_trans = 0)
//! ```
//!
//! Without flash attention V is stored transposed (`v_trans = 1`), and each V layer is
//! `(i32 v_type, u32 element bytes, u32 n_embd_v, then n_embd_v rows of cell_count elements)`:
//! it is taken apart into the same per-token rows (element `j` of every cell gathered) and put
//! back transposed.
//!
//! Only a sequence's own stream holds cells. Restoring reads the cells of whichever stream
//! carries them into the destination sequence, so a segment is assembled as the first stream of
//! a blob with the context's stream count.

/// What every segment of one model and context shares: the row sizes and types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    n_rot_k: u32,
    n_rot_v: u32,
    /// Per layer: (type, bytes per row).
    k: Vec<(i32, u64)>,
    v: Vec<(i32, u64)>,
    /// Bytes of one cell's metadata.
    meta_stride: usize,
    /// V transposed in the blob (no flash attention): per V layer, the bytes of one element
    /// (a row is `row / element` elements).
    v_trans: Option<Vec<u32>>,
}

impl Layout {
    /// Bytes one token takes in a segment.
    pub fn bytes_per_token(&self) -> usize {
        self.meta_stride + self.k.iter().chain(&self.v).map(|(_, r)| *r as usize).sum::<usize>()
    }
}

/// The KV of positions `start..start + cells` of one sequence, row by row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub start: u32,
    pub cells: usize,
    meta: Vec<u8>,
    k: Vec<Vec<u8>>,
    v: Vec<Vec<u8>>,
}

impl Segment {
    /// No positions (the radix tree's root).
    pub fn empty() -> Self {
        Self { start: 0, cells: 0, meta: Vec::new(), k: Vec::new(), v: Vec::new() }
    }

    pub fn bytes(&self) -> usize {
        self.meta.len() + self.k.iter().chain(&self.v).map(Vec::len).sum::<usize>()
    }

    /// Positions `from..to` (absolute), which must lie inside this segment.
    pub fn slice(&self, layout: &Layout, from: u32, to: u32) -> Segment {
        let (a, b) = ((from - self.start) as usize, (to - self.start) as usize);
        debug_assert!(a <= b && b <= self.cells);
        let rows = |data: &[Vec<u8>], sizes: &[(i32, u64)]| {
            data.iter().zip(sizes).map(|(d, (_, r))| d[a * *r as usize..b * *r as usize].to_vec()).collect()
        };
        Segment {
            start: from,
            cells: b - a,
            meta: self.meta[a * layout.meta_stride..b * layout.meta_stride].to_vec(),
            k: rows(&self.k, &layout.k),
            v: rows(&self.v, &layout.v),
        }
    }
}

/// Why a blob could not be taken apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("the state ends early (at byte {0})")]
    Truncated(usize),
    #[error("the state holds {0} cells across streams; one stream was expected")]
    ManyStreams(usize),
    #[error("unexpected state layout: {0}")]
    Layout(String),
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StateError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.buf.len()).ok_or(StateError::Truncated(self.at))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, StateError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| StateError::Truncated(self.at))?))
    }
    fn i32(&mut self) -> Result<i32, StateError> {
        Ok(self.u32()? as i32)
    }
    fn u64(&mut self) -> Result<u64, StateError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| StateError::Truncated(self.at))?))
    }
}

/// llama_context's magic at the start of a sequence state.
const IO_MAGIC: u32 = 0xAF14_3CD8;

/// Takes a whole-sequence blob apart: its layout and the sequence's cells sorted by position,
/// which must be `0..n` without gaps (a sequence as a lane holds it).
pub fn parse(blob: &[u8]) -> Result<(Layout, Segment), StateError> {
    let mut r = Reader { buf: blob, at: 0 };
    let magic = r.u32()?;
    if magic != IO_MAGIC {
        return Err(StateError::Layout(format!("magic {magic:#x}")));
    }
    let _seq_id = r.i32()?;
    let n_stream = r.u32()?;
    let mut found: Option<(Layout, Segment)> = None;
    for _ in 0..n_stream {
        let cells = r.u32()? as usize;
        if cells == 0 {
            continue;
        }
        if found.is_some() {
            return Err(StateError::ManyStreams(cells));
        }
        let start = r.at;
        // The cell metadata is 12 bytes, or 24 with the extension some models have: the data
        // header after it tells which.
        let mut parsed = None;
        for stride in [12usize, 24] {
            r.at = start;
            if let Ok(p) = parse_stream(&mut r, cells, stride) {
                parsed = Some(p);
                break;
            }
        }
        found = Some(parsed.ok_or_else(|| StateError::Layout("no cell stride fits".into()))?);
    }
    if r.at != blob.len() {
        return Err(StateError::Layout(format!("{} bytes after the last stream", blob.len() - r.at)));
    }
    found.ok_or_else(|| StateError::Layout("the sequence holds no cells".into()))
}

fn parse_stream(r: &mut Reader<'_>, cells: usize, stride: usize) -> Result<(Layout, Segment), StateError> {
    let meta = r.take(cells.checked_mul(stride).ok_or(StateError::Truncated(r.at))?)?;
    let v_trans = r.u32()?;
    let n_layer = r.u32()? as usize;
    if v_trans > 1 || n_layer == 0 || n_layer > 4096 {
        return Err(StateError::Layout(format!("v_trans {v_trans}, {n_layer} layers")));
    }
    let (n_rot_k, n_rot_v) = (r.u32()?, r.u32()?);
    let mut layout = Layout {
        n_rot_k,
        n_rot_v,
        k: Vec::new(),
        v: Vec::new(),
        meta_stride: stride,
        v_trans: (v_trans == 1).then(Vec::new),
    };
    let mut k = Vec::with_capacity(n_layer);
    let rows = |r: &mut Reader<'_>| -> Result<((i32, u64), Vec<u8>), StateError> {
        let ty = r.i32()?;
        let row = r.u64()?;
        if !(0..256).contains(&ty) || row == 0 || row > 1 << 24 {
            return Err(StateError::Layout(format!("type {ty}, row {row}")));
        }
        let data = r.take((row as usize).checked_mul(cells).ok_or(StateError::Truncated(r.at))?)?.to_vec();
        Ok(((ty, row), data))
    };
    for _ in 0..n_layer {
        let (l, d) = rows(r)?;
        layout.k.push(l);
        k.push(d);
    }
    // V layers until this stream's data ends: the rest of the blob is 4 bytes per empty stream.
    let mut v = Vec::new();
    if let Some(elements) = layout.v_trans.as_mut() {
        while r.buf.len() - r.at > 4 && looks_like_transposed(r) {
            let (ty, el, n_embd) = (r.i32()?, r.u32()? as usize, r.u32()? as usize);
            let data =
                r.take(n_embd.checked_mul(cells).and_then(|x| x.checked_mul(el)).ok_or(StateError::Truncated(r.at))?)?;
            // Element j of cell i is at (j * cells + i): gather each cell's elements into its row.
            let row = n_embd * el;
            let mut rows = vec![0u8; row * cells];
            for j in 0..n_embd {
                for i in 0..cells {
                    let src = (j * cells + i) * el;
                    rows[i * row + j * el..i * row + (j + 1) * el].copy_from_slice(&data[src..src + el]);
                }
            }
            layout.v.push((ty, row as u64));
            elements.push(el as u32);
            v.push(rows);
        }
    } else {
        while r.buf.len() - r.at > 4 && looks_like_rows(r) {
            let (l, d) = rows(r)?;
            layout.v.push(l);
            v.push(d);
        }
    }
    // Cells sorted by position; positions must be 0..n.
    let pos: Vec<i32> = (0..cells)
        .map(|i| i32::from_le_bytes(meta[i * stride..i * stride + 4].try_into().unwrap_or_default()))
        .collect();
    let mut order: Vec<usize> = (0..cells).collect();
    order.sort_by_key(|&i| pos[i]);
    if order.iter().enumerate().any(|(want, &i)| pos[i] != want as i32) {
        return Err(StateError::Layout("positions are not 0..n".into()));
    }
    let permute = |data: &[u8], row: usize| -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len());
        for &i in &order {
            out.extend_from_slice(&data[i * row..(i + 1) * row]);
        }
        out
    };
    let meta = permute(meta, stride);
    let k = k.iter().zip(&layout.k).map(|(d, (_, row))| permute(d, *row as usize)).collect();
    let v = v.iter().zip(&layout.v).map(|(d, (_, row))| permute(d, *row as usize)).collect();
    Ok((layout, Segment { start: 0, cells, meta, k, v }))
}

/// Whether the next bytes start a V layer (a type and a row size) rather than a stream count.
fn looks_like_rows(r: &Reader<'_>) -> bool {
    let rest = &r.buf[r.at..];
    if rest.len() < 12 {
        return false;
    }
    let ty = i32::from_le_bytes(rest[0..4].try_into().unwrap_or_default());
    let row = u64::from_le_bytes(rest[4..12].try_into().unwrap_or_default());
    (0..256).contains(&ty) && row > 0 && row <= 1 << 24
}

/// Whether the next bytes start a transposed V layer (type, element size, width).
fn looks_like_transposed(r: &Reader<'_>) -> bool {
    let rest = &r.buf[r.at..];
    if rest.len() < 12 {
        return false;
    }
    let ty = i32::from_le_bytes(rest[0..4].try_into().unwrap_or_default());
    let el = u32::from_le_bytes(rest[4..8].try_into().unwrap_or_default());
    let n_embd = u32::from_le_bytes(rest[8..12].try_into().unwrap_or_default());
    (0..256).contains(&ty) && matches!(el, 1 | 2 | 4) && (1..=1 << 16).contains(&n_embd)
}

/// Puts segments covering positions `0..n` back together as a blob for a context with
/// `n_stream` streams, ready for `llama_state_seq_set_data`.
pub fn assemble(layout: &Layout, segments: &[&Segment], n_stream: u32) -> Result<Vec<u8>, StateError> {
    let mut next = 0u32;
    for s in segments {
        if s.start != next {
            return Err(StateError::Layout(format!("a segment starts at {} where {next} was expected", s.start)));
        }
        next += s.cells as u32;
    }
    let cells: usize = segments.iter().map(|s| s.cells).sum();
    let mut out = Vec::with_capacity(24 + cells * layout.bytes_per_token() + 12 * (layout.k.len() + layout.v.len()));
    out.extend_from_slice(&IO_MAGIC.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&n_stream.max(1).to_le_bytes());
    out.extend_from_slice(&(cells as u32).to_le_bytes());
    for s in segments {
        out.extend_from_slice(&s.meta);
    }
    out.extend_from_slice(&u32::from(layout.v_trans.is_some()).to_le_bytes());
    out.extend_from_slice(&(layout.k.len() as u32).to_le_bytes());
    out.extend_from_slice(&layout.n_rot_k.to_le_bytes());
    out.extend_from_slice(&layout.n_rot_v.to_le_bytes());
    for (l, (ty, row)) in layout.k.iter().enumerate() {
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&row.to_le_bytes());
        for s in segments {
            out.extend_from_slice(&s.k[l]);
        }
    }
    for (l, (ty, row)) in layout.v.iter().enumerate() {
        out.extend_from_slice(&ty.to_le_bytes());
        match &layout.v_trans {
            None => {
                out.extend_from_slice(&row.to_le_bytes());
                for s in segments {
                    out.extend_from_slice(&s.v[l]);
                }
            }
            Some(elements) => {
                let el = elements.get(l).copied().unwrap_or(2) as usize;
                let row = *row as usize;
                let n_embd = row / el;
                out.extend_from_slice(&(el as u32).to_le_bytes());
                out.extend_from_slice(&(n_embd as u32).to_le_bytes());
                // Row j: element j of every cell, in position order.
                for j in 0..n_embd {
                    for s in segments {
                        for i in 0..s.cells {
                            out.extend_from_slice(&s.v[l][i * row + j * el..i * row + (j + 1) * el]);
                        }
                    }
                }
            }
        }
    }
    for _ in 1..n_stream.max(1) {
        out.extend_from_slice(&0u32.to_le_bytes());
    }
    Ok(out)
}

/// A segment and its layout as bytes (the disk tier's payload), and back.
pub fn encode(layout: &Layout, seg: &Segment) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + seg.bytes());
    let put32 = |o: &mut Vec<u8>, x: u32| o.extend_from_slice(&x.to_le_bytes());
    put32(&mut out, layout.n_rot_k);
    put32(&mut out, layout.n_rot_v);
    put32(&mut out, layout.meta_stride as u32);
    put32(&mut out, layout.k.len() as u32);
    put32(&mut out, layout.v.len() as u32);
    for (ty, row) in layout.k.iter().chain(&layout.v) {
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&row.to_le_bytes());
    }
    // Transposed V: each layer's element size (none when V is not transposed).
    match &layout.v_trans {
        None => put32(&mut out, 0),
        Some(elements) => {
            put32(&mut out, 1);
            for el in elements {
                put32(&mut out, *el);
            }
        }
    }
    put32(&mut out, seg.start);
    put32(&mut out, seg.cells as u32);
    out.extend_from_slice(&seg.meta);
    for d in seg.k.iter().chain(&seg.v) {
        out.extend_from_slice(d);
    }
    out
}

pub fn decode(bytes: &[u8]) -> Result<(Layout, Segment), StateError> {
    let mut r = Reader { buf: bytes, at: 0 };
    let (n_rot_k, n_rot_v, stride) = (r.u32()?, r.u32()?, r.u32()? as usize);
    let (nk, nv) = (r.u32()? as usize, r.u32()? as usize);
    if nk > 4096 || nv > 4096 || !(stride == 12 || stride == 24) {
        return Err(StateError::Layout(format!("{nk} K layers, {nv} V layers, stride {stride}")));
    }
    let mut sizes = Vec::with_capacity(nk + nv);
    for _ in 0..nk + nv {
        let (ty, row) = (r.i32()?, r.u64()?);
        if row == 0 || row > 1 << 24 {
            return Err(StateError::Layout(format!("row {row}")));
        }
        sizes.push((ty, row));
    }
    let v_trans = match r.u32()? {
        0 => None,
        1 => Some((0..nv).map(|_| r.u32()).collect::<Result<Vec<u32>, _>>()?),
        other => return Err(StateError::Layout(format!("v_trans {other}"))),
    };
    if let Some(elements) = &v_trans {
        if elements.iter().zip(&sizes[nk..]).any(|(el, (_, row))| !matches!(el, 1 | 2 | 4) || row % u64::from(*el) != 0)
        {
            return Err(StateError::Layout("transposed V element sizes".into()));
        }
    }
    let (start, cells) = (r.u32()?, r.u32()? as usize);
    let meta = r.take(cells.checked_mul(stride).ok_or(StateError::Truncated(r.at))?)?.to_vec();
    let mut data = Vec::with_capacity(nk + nv);
    for (_, row) in &sizes {
        data.push(r.take((*row as usize).checked_mul(cells).ok_or(StateError::Truncated(r.at))?)?.to_vec());
    }
    if r.at != bytes.len() {
        return Err(StateError::Layout("trailing bytes".into()));
    }
    let v = data.split_off(nk);
    let layout =
        Layout { n_rot_k, n_rot_v, k: sizes[..nk].to_vec(), v: sizes[nk..].to_vec(), meta_stride: stride, v_trans };
    Ok((layout, Segment { start, cells, meta, k: data, v }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A blob as llama.cpp writes it for a sequence of `cells` tokens in stream `stream` of
    /// `n_stream`, with `layers` K and V layers of `row` bytes; cell `i` holds position
    /// `order[i]`, and every row's bytes name its layer and position.
    pub fn blob(n_stream: u32, stream: u32, order: &[i32], layers: usize, row: u64) -> Vec<u8> {
        let cells = order.len();
        let mut out = Vec::new();
        out.extend_from_slice(&IO_MAGIC.to_le_bytes());
        out.extend_from_slice(&(stream as i32).to_le_bytes());
        out.extend_from_slice(&n_stream.to_le_bytes());
        for s in 0..n_stream {
            if s != stream {
                out.extend_from_slice(&0u32.to_le_bytes());
                continue;
            }
            out.extend_from_slice(&(cells as u32).to_le_bytes());
            for &p in order {
                out.extend_from_slice(&p.to_le_bytes());
                out.extend_from_slice(&1u32.to_le_bytes());
                out.extend_from_slice(&(stream as i32).to_le_bytes());
            }
            for x in [0u32, layers as u32, 0, 0] {
                out.extend_from_slice(&x.to_le_bytes());
            }
            for kv in [1u8, 2] {
                for l in 0..layers {
                    out.extend_from_slice(&1i32.to_le_bytes());
                    out.extend_from_slice(&row.to_le_bytes());
                    for &p in order {
                        out.extend((0..row).map(|b| kv * 64 + l as u8 * 8 + (p as u8).wrapping_add(b as u8)));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn a_blob_comes_apart_and_back_together_byte_for_byte() {
        let b = blob(4, 2, &[0, 1, 2, 3, 4, 5], 3, 5);
        let (layout, seg) = parse(&b).expect("parses");
        assert_eq!(seg.cells, 6);
        assert_eq!(layout.bytes_per_token(), 12 + 6 * 5);
        // Reassembled into stream 0 of 4 streams: the same rows.
        let again = assemble(&layout, &[&seg], 4).expect("assembles");
        assert_eq!(parse(&again).expect("parses").1, seg);
        // Pieces of it assemble into the same whole.
        let (a, b2, c) = (seg.slice(&layout, 0, 2), seg.slice(&layout, 2, 5), seg.slice(&layout, 5, 6));
        assert_eq!(assemble(&layout, &[&a, &b2, &c], 4).expect("assembles"), again);
        // A prefix is a valid state of its own.
        let prefix = assemble(&layout, &[&a, &b2], 2).expect("prefix");
        assert_eq!(parse(&prefix).expect("parses").1.cells, 5);
        // Gaps are refused.
        assert!(assemble(&layout, &[&a, &c], 4).is_err());
        // The disk payload round-trips.
        assert_eq!(decode(&encode(&layout, &b2)).expect("decodes"), (layout.clone(), b2));
    }

    /// [`blob`] with V transposed (no flash attention): each V layer `n_embd` elements of `el`
    /// bytes per cell, stored row by row.
    pub fn transposed_blob(
        n_stream: u32,
        stream: u32,
        order: &[i32],
        layers: usize,
        n_embd: usize,
        el: usize,
    ) -> Vec<u8> {
        let cells = order.len();
        let row = (n_embd * el) as u64;
        let mut out = Vec::new();
        out.extend_from_slice(&IO_MAGIC.to_le_bytes());
        out.extend_from_slice(&(stream as i32).to_le_bytes());
        out.extend_from_slice(&n_stream.to_le_bytes());
        for s in 0..n_stream {
            if s != stream {
                out.extend_from_slice(&0u32.to_le_bytes());
                continue;
            }
            out.extend_from_slice(&(cells as u32).to_le_bytes());
            for &p in order {
                out.extend_from_slice(&p.to_le_bytes());
                out.extend_from_slice(&1u32.to_le_bytes());
                out.extend_from_slice(&(stream as i32).to_le_bytes());
            }
            for x in [1u32, layers as u32, 0, 0] {
                out.extend_from_slice(&x.to_le_bytes());
            }
            for l in 0..layers {
                out.extend_from_slice(&1i32.to_le_bytes());
                out.extend_from_slice(&row.to_le_bytes());
                for &p in order {
                    out.extend((0..row).map(|b| 64 + l as u8 * 8 + (p as u8).wrapping_add(b as u8)));
                }
            }
            for l in 0..layers {
                out.extend_from_slice(&1i32.to_le_bytes());
                out.extend_from_slice(&(el as u32).to_le_bytes());
                out.extend_from_slice(&(n_embd as u32).to_le_bytes());
                for j in 0..n_embd {
                    for &p in order {
                        out.extend(
                            (0..el).map(|b| 128 + l as u8 * 16 + (j as u8) * 4 + (p as u8).wrapping_add(b as u8)),
                        );
                    }
                }
            }
        }
        out
    }

    #[test]
    fn transposed_v_comes_apart_and_back_together_byte_for_byte() {
        let b = transposed_blob(2, 0, &[0, 1, 2, 3, 4], 2, 3, 2);
        let (layout, seg) = parse(&b).expect("parses");
        assert_eq!(seg.cells, 5);
        assert_eq!(assemble(&layout, &[&seg], 2).expect("assembles"), b, "the very bytes llama.cpp wrote");
        let (a, c) = (seg.slice(&layout, 0, 3), seg.slice(&layout, 3, 5));
        assert_eq!(assemble(&layout, &[&a, &c], 2).expect("pieces"), b);
        let prefix = assemble(&layout, &[&a], 2).expect("prefix");
        assert_eq!(parse(&prefix).expect("a valid state").1, a);
        assert_eq!(decode(&encode(&layout, &c)).expect("decodes"), (layout.clone(), c));
        // Cells stored out of position order are gathered the same way.
        let shuffled = transposed_blob(2, 0, &[3, 0, 4, 1, 2], 2, 3, 2);
        assert_eq!(parse(&shuffled).expect("parses").1, seg);
    }

    #[test]
    fn cells_are_sorted_by_position_and_bad_blobs_are_refused() {
        let shuffled = blob(2, 0, &[2, 0, 1], 2, 4);
        let ordered = blob(2, 0, &[0, 1, 2], 2, 4);
        assert_eq!(parse(&shuffled).expect("parses").1, parse(&ordered).expect("parses").1);
        assert!(parse(&blob(2, 0, &[0, 2, 3], 2, 4)).is_err(), "a gap in positions");
        let good = blob(2, 1, &[0, 1], 2, 4);
        for cut in [1, 9, 17, good.len() / 2, good.len() - 1] {
            assert!(parse(&good[..cut]).is_err(), "truncated at {cut}");
        }
        let mut junk = good.clone();
        junk.extend_from_slice(b"xyz");
        assert!(parse(&junk).is_err());
        assert!(decode(&good).is_err(), "a raw blob is not a disk payload");
    }
}
