//! Compressed clusters: zlib (raw deflate, as the qcow2 spec says: no zlib header,
//! written with a 4 KiB window so QEMU's `-12` window inflater can read it) and zstd.

use super::header::Compression;
use super::Inner;
use crate::disk::Result;
use flate2::{Compress, Decompress, FlushCompress, FlushDecompress, Status};
use std::io::Read;

/// Largest zstd window accepted, so a hostile frame header cannot make the decoder
/// reserve a huge buffer.
const MAX_ZSTD_WINDOW: u64 = 8 << 20;

/// Compresses one cluster.
pub fn compress(data: &[u8], kind: Compression) -> std::result::Result<Vec<u8>, String> {
    match kind {
        Compression::Zlib => {
            let mut c = Compress::new_with_window_bits(flate2::Compression::default(), false, 12);
            let mut out = Vec::with_capacity(data.len() + 1024);
            loop {
                let before = c.total_in() as usize;
                let status = c
                    .compress_vec(&data[before..], &mut out, FlushCompress::Finish)
                    .map_err(|e| format!("deflate failed: {e}"))?;
                match status {
                    Status::StreamEnd => return Ok(out),
                    _ => out.reserve(out.capacity().max(4096)),
                }
            }
        }
        Compression::Zstd => Ok(ruzstd::encoding::compress_to_vec(
            data,
            ruzstd::encoding::CompressionLevel::Fastest,
        )),
    }
}

/// Decompresses `input` into exactly `out.len()` bytes.
pub fn decompress(
    input: &[u8],
    out: &mut [u8],
    kind: Compression,
) -> std::result::Result<(), String> {
    match kind {
        Compression::Zlib => {
            let mut d = Decompress::new_with_window_bits(false, 15);
            let status = d
                .decompress(input, out, FlushDecompress::Finish)
                .map_err(|e| format!("corrupt deflate data: {e}"))?;
            let produced = d.total_out() as usize;
            if produced != out.len() || !matches!(status, Status::StreamEnd | Status::Ok) {
                return Err(format!(
                    "compressed cluster inflates to {produced} bytes, not {}",
                    out.len()
                ));
            }
            Ok(())
        }
        Compression::Zstd => {
            let window = zstd_window(input)?;
            if window > MAX_ZSTD_WINDOW {
                return Err(format!("zstd frame asks for a {window}-byte window"));
            }
            let mut dec = ruzstd::decoding::StreamingDecoder::new(input)
                .map_err(|e| format!("corrupt zstd frame: {e}"))?;
            let mut filled = 0;
            while filled < out.len() {
                match dec.read(&mut out[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) => return Err(format!("corrupt zstd data: {e}")),
                }
            }
            if filled != out.len() {
                return Err(format!(
                    "compressed cluster decompresses to {filled} bytes, not {}",
                    out.len()
                ));
            }
            Ok(())
        }
    }
}

/// The window size a zstd frame header declares (RFC 8878, section 3.1.1.1).
fn zstd_window(f: &[u8]) -> std::result::Result<u64, String> {
    if f.len() < 6 || f[..4] != [0x28, 0xb5, 0x2f, 0xfd] {
        return Err("not a zstd frame".into());
    }
    let fhd = f[4];
    let single = fhd & 0x20 != 0;
    if !single {
        let wd = f[5];
        let log = 10 + (wd >> 3) as u32;
        if log > 41 {
            return Err("zstd window too large".into());
        }
        let base = 1u64 << log;
        return Ok(base + (base / 8) * (wd & 7) as u64);
    }
    let did = [0usize, 1, 2, 4][(fhd & 3) as usize];
    let fcs_len = [1usize, 2, 4, 8][(fhd >> 6) as usize];
    let at = 5 + did;
    let bytes = f
        .get(at..at + fcs_len)
        .ok_or_else(|| "truncated zstd frame header".to_string())?;
    let mut v = bytes.iter().rev().fold(0u64, |v, b| (v << 8) | *b as u64);
    if fcs_len == 2 {
        v += 256;
    }
    Ok(v)
}

impl Inner {
    /// The decompressed content of a compressed cluster (cached: sequential reads of
    /// one cluster decompress it once).
    pub(super) fn decompress_cluster(&mut self, offset: u64, sectors: u64) -> Result<&[u8]> {
        let key = (offset, sectors);
        if self.zcache.as_ref().map(|(k, _)| *k) != Some(key) {
            let end = ((offset >> 9) + sectors + 1) << 9;
            let len = (end - offset).min(2 * self.cs) as usize;
            if offset >= self.file_len {
                return Err(self.invalid(format!(
                    "compressed cluster at {offset:#x} lies past the end of the file"
                )));
            }
            let mut input = vec![0u8; len];
            self.read_raw(&mut input, offset)?;
            let mut out = vec![0u8; self.cs as usize];
            decompress(&input, &mut out, self.h.compression)
                .map_err(|m| self.invalid(format!("compressed cluster at {offset:#x}: {m}")))?;
            self.zcache = Some((key, out));
        }
        Ok(&self.zcache.as_ref().expect("filled above").1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_both_codecs() {
        let data: Vec<u8> = (0..65536u32)
            .map(|i| (i % 251) as u8 ^ (i / 4096) as u8)
            .collect();
        for kind in [Compression::Zlib, Compression::Zstd] {
            let c = compress(&data, kind).unwrap();
            assert!(
                c.len() < data.len() / 2,
                "{kind:?} compressed to {}",
                c.len()
            );
            let mut padded = c.clone();
            padded.extend_from_slice(&[0xaa; 300]); // sector padding after the stream
            let mut out = vec![0u8; data.len()];
            decompress(&padded, &mut out, kind).unwrap();
            assert_eq!(out, data);
            // Garbage and truncation give errors, not panics.
            let mut out = vec![0u8; data.len()];
            assert!(decompress(&c[..c.len() / 2], &mut out, kind).is_err());
            assert!(decompress(&[0xff; 64], &mut out, kind).is_err());
        }
    }

    #[test]
    fn zstd_window_is_bounded() {
        // Window descriptor asking for 2^41 bytes.
        let frame = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 0xf8, 0, 0, 0, 0];
        let mut out = vec![0u8; 512];
        let e = decompress(&frame, &mut out, Compression::Zstd).unwrap_err();
        assert!(e.contains("window"), "{e}");
    }
}
