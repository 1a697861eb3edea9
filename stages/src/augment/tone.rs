//! Per-channel lookup-table ops with PIL `ImageOps` semantics: AutoContrast, Equalize,
//! Posterize, Solarize (protocon.md s.2, RandAugment pool).
//!
//! Each builds one 256-entry table per channel exactly as Pillow's Python code does
//! (`ImageOps.autocontrast` with cutoff 0, `ImageOps.equalize`, `posterize`, `solarize`) and
//! applies it; the results are byte-identical to Pillow's (tests hold outputs recorded from
//! Pillow 13).

use super::Image;

/// Per-channel 256-bin histograms (up to 3 channels).
fn histograms(img: &Image) -> [[u32; 256]; 3] {
    let mut h = [[0u32; 256]; 3];
    match img.channels() {
        1 => img.data().iter().for_each(|&v| h[0][v as usize] += 1),
        _ => {
            for px in img.data().chunks_exact(3) {
                h[0][px[0] as usize] += 1;
                h[1][px[1] as usize] += 1;
                h[2][px[2] as usize] += 1;
            }
        }
    }
    h
}

/// Applies one table per channel.
fn apply_luts(img: &mut Image, luts: &[[u8; 256]; 3]) {
    match img.channels() {
        1 => img.data_mut().iter_mut().for_each(|v| *v = luts[0][*v as usize]),
        _ => {
            for px in img.data_mut().chunks_exact_mut(3) {
                px[0] = luts[0][px[0] as usize];
                px[1] = luts[1][px[1] as usize];
                px[2] = luts[2][px[2] as usize];
            }
        }
    }
}

/// Applies the same table to every channel.
fn apply_lut(img: &mut Image, lut: &[u8; 256]) {
    img.data_mut().iter_mut().for_each(|v| *v = lut[*v as usize]);
}

/// Stretches each channel so its darkest value becomes 0 and its lightest 255
/// (`ImageOps.autocontrast(img)`, cutoff 0). A constant channel is left unchanged.
///
/// PIL's table: `lut[i] = clamp(int(i * scale + offset), 0, 255)` with
/// `scale = 255 / (hi - lo)` and `offset = -lo * scale`, in double precision; `int()`
/// truncates toward zero.
pub fn autocontrast(img: &mut Image) {
    let hist = histograms(img);
    let mut luts = [[0u8; 256]; 3];
    for (h, lut) in hist.iter().zip(luts.iter_mut()).take(img.channels()) {
        let lo = h.iter().position(|&c| c != 0).unwrap_or(0);
        let hi = h.iter().rposition(|&c| c != 0).unwrap_or(0);
        if hi <= lo {
            *lut = identity_lut();
            continue;
        }
        let scale = 255.0 / (hi - lo) as f64;
        let offset = -(lo as f64) * scale;
        for (i, out) in lut.iter_mut().enumerate() {
            let v = (i as f64 * scale + offset) as i64;
            *out = v.clamp(0, 255) as u8;
        }
    }
    apply_luts(img, &luts);
}

/// Flattens each channel's histogram (`ImageOps.equalize(img)`).
///
/// PIL's table, per channel with histogram `h`: with `step = (n - count of the last
/// non-empty bin) // 255`, if fewer than two bins are used or `step` is 0 the channel is
/// unchanged; otherwise `lut[i] = (step // 2 + sum(h[..i])) // step` (integer arithmetic).
pub fn equalize(img: &mut Image) {
    let hist = histograms(img);
    let mut luts = [[0u8; 256]; 3];
    for (h, lut) in hist.iter().zip(luts.iter_mut()).take(img.channels()) {
        let used = h.iter().filter(|&&c| c != 0).count();
        let last = h.iter().rev().copied().find(|&c| c != 0).unwrap_or(0) as u64;
        let total: u64 = h.iter().map(|&c| u64::from(c)).sum();
        let step = if used <= 1 { 0 } else { (total - last) / 255 };
        if step == 0 {
            *lut = identity_lut();
            continue;
        }
        let mut n = step / 2;
        for (i, out) in lut.iter_mut().enumerate() {
            // The last used bin can reach 256 (e.g. 512/256/256 pixels at three levels);
            // Pillow's `point` clips it to 255.
            *out = (n / step).min(255) as u8;
            n += u64::from(h[i]);
        }
    }
    apply_luts(img, &luts);
}

/// Keeps the top `bits` bits of every value (`ImageOps.posterize(img, bits)`), 1..=8.
///
/// # Panics
/// When `bits` is 0 or above 8.
pub fn posterize(img: &mut Image, bits: u8) {
    assert!((1..=8).contains(&bits), "posterize bits must be 1..=8, got {bits}");
    let mask = !((1u16 << (8 - bits)) - 1) as u8;
    img.data_mut().iter_mut().for_each(|v| *v &= mask);
}

/// Inverts every value at or above `threshold` (`ImageOps.solarize(img, threshold)`):
/// `v < threshold ? v : 255 - v`. A threshold of 256 (or more) leaves the image unchanged.
pub fn solarize(img: &mut Image, threshold: u16) {
    let mut lut = [0u8; 256];
    for (i, out) in lut.iter_mut().enumerate() {
        *out = if (i as u16) < threshold { i as u8 } else { 255 - i as u8 };
    }
    apply_lut(img, &lut);
}

fn identity_lut() -> [u8; 256] {
    std::array::from_fn(|i| i as u8)
}
