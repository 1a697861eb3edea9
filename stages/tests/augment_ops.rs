//! The 14 RandAugment ops and Cutout on crafted images, against hand-worked results, plus
//! outputs recorded from Pillow 13.0 on one textured image (recorded with
//! `benches/reference/randaugment_pil.py`'s ops; no Python is needed to run these tests).

use protocon_stages::augment::{crop, cutout, enhance, geometry, tone, Image, OpParam, RandAugmentOp};

fn gray(w: usize, h: usize, data: &[u8]) -> Image {
    Image::new(w, h, 1, data.to_vec()).unwrap()
}

/// A `w` x `h` gray image, 0 everywhere but 255 at (x, y).
fn one_bright(w: usize, h: usize, x: usize, y: usize) -> Image {
    let mut img = Image::filled(w, h, 1, 0).unwrap();
    img.pixel_mut(x, y)[0] = 255;
    img
}

/// Positions of value `v`, as (x, y).
fn positions(img: &Image, v: u8) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for y in 0..img.height() {
        for x in 0..img.width() {
            if img.pixel(x, y)[0] == v {
                out.push((x, y));
            }
        }
    }
    out
}

// ---- tone: Solarize, Posterize, AutoContrast, Equalize ----

#[test]
fn solarize_inverts_at_and_above_threshold() {
    let mut img = gray(6, 1, &[0, 100, 127, 128, 200, 255]);
    tone::solarize(&mut img, 128);
    assert_eq!(img.data(), &[0, 100, 127, 127, 55, 0]);
    let mut img = gray(3, 1, &[0, 128, 255]);
    tone::solarize(&mut img, 256);
    assert_eq!(img.data(), &[0, 128, 255], "threshold 256 leaves everything");
    tone::solarize(&mut img, 0);
    assert_eq!(img.data(), &[255, 127, 0], "threshold 0 inverts everything");
}

#[test]
fn posterize_keeps_top_bits() {
    let mut img = gray(4, 1, &[0b1011_0111, 0b0000_1111, 200, 127]);
    tone::posterize(&mut img, 4);
    assert_eq!(img.data(), &[0b1011_0000, 0, 192, 0b0111_0000]);
    let mut img = gray(2, 1, &[200, 127]);
    tone::posterize(&mut img, 1);
    assert_eq!(img.data(), &[128, 0]);
    let mut img = gray(2, 1, &[201, 3]);
    tone::posterize(&mut img, 8);
    assert_eq!(img.data(), &[201, 3]);
}

#[test]
fn autocontrast_stretches_each_channel_separately() {
    // R spans 100..=151: scale 255/51 = 5 exactly, so 110 -> 50. G is constant: unchanged.
    // B already spans 0..=255: unchanged.
    let mut img = Image::new(3, 1, 3, vec![100, 7, 0, 110, 7, 128, 151, 7, 255]).unwrap();
    tone::autocontrast(&mut img);
    assert_eq!(img.data(), &[0, 7, 0, 50, 7, 128, 255, 7, 255]);
    // Range 10..=12: scale 127.5, the middle value 127.5 truncates to 127.
    let mut img = gray(3, 1, &[10, 11, 12]);
    tone::autocontrast(&mut img);
    assert_eq!(img.data(), &[0, 127, 255]);
}

#[test]
fn equalize_on_a_known_histogram() {
    // 1024 pixels: 512 at 10, 256 at 20, 256 at 30. step = (1024 - 256) // 255 = 3,
    // lut[v] = (step // 2 + pixels below v) // step: 10 -> 1 // 3 = 0, 20 -> 513 // 3 = 171,
    // 30 -> 769 // 3 = 256, clipped to 255.
    let data: Vec<u8> = [10u8; 512].iter().chain(&[20u8; 256]).chain(&[30u8; 256]).copied().collect();
    let mut img = gray(32, 32, &data);
    tone::equalize(&mut img);
    assert_eq!(positions(&img, 0).len(), 512);
    assert_eq!(positions(&img, 171).len(), 256);
    assert_eq!(positions(&img, 255).len(), 256);
    // Fewer than 256 + 1 pixels: step is 0, PIL leaves the image as it is.
    let mut small = gray(3, 1, &[0, 100, 200]);
    tone::equalize(&mut small);
    assert_eq!(small.data(), &[0, 100, 200]);
}

// ---- enhance: Brightness, Color, Contrast, Sharpness ----

#[test]
fn brightness_blends_with_black_and_truncates() {
    let mut img = gray(4, 1, &[0, 10, 201, 255]);
    enhance::brightness(&mut img, 0.5);
    assert_eq!(img.data(), &[0, 5, 100, 127]);
}

#[test]
fn color_blends_with_luma() {
    // L(200, 100, 0) = (200*19595 + 100*38470 + 2^15) >> 16 = 118.
    assert_eq!(enhance::luma(200, 100, 0), 118);
    let mut img = Image::new(1, 1, 3, vec![200, 100, 0]).unwrap();
    enhance::color(&mut img, 0.5);
    // 118 + 0.5 * (200 - 118) = 159, 118 - 9 = 109, 118 - 59 = 59.
    assert_eq!(img.data(), &[159, 109, 59]);
    let mut img = Image::new(1, 1, 3, vec![200, 100, 0]).unwrap();
    enhance::color(&mut img, 0.0);
    assert_eq!(img.data(), &[118, 118, 118]);
    // Above 1 the blend leaves 0..=255 and saturates, as Pillow clips:
    // 118 + 3 * 82 = 364 -> 255, 118 - 3 * 18 = 64, 118 - 3 * 118 = -236 -> 0.
    let mut img = Image::new(1, 1, 3, vec![200, 100, 0]).unwrap();
    enhance::color(&mut img, 3.0);
    assert_eq!(img.data(), &[255, 64, 0]);
}

#[test]
fn contrast_blends_with_mean_gray() {
    // Mean 50: 0 -> 50 - 25 = 25, 100 -> 75.
    let mut img = gray(2, 1, &[0, 100]);
    enhance::contrast(&mut img, 0.5);
    assert_eq!(img.data(), &[25, 75]);
}

#[test]
fn sharpness_blends_with_the_smoothed_image_and_keeps_the_border() {
    // 3x3, centre 130: smoothed centre = 0.5 + 130 * 5/13 = 50.5 -> 50; blend 0.5 -> 90.
    let mut img = Image::filled(3, 3, 1, 0).unwrap();
    img.pixel_mut(1, 1)[0] = 130;
    let mut scratch = Image::default();
    enhance::sharpness(&mut img, 0.5, &mut scratch);
    assert_eq!(img.data(), &[0, 0, 0, 0, 90, 0, 0, 0, 0]);
    // 5x5, centre 130: its 8 neighbours smooth to 0.5 + 130/13 = 10.5 -> 10, blend -> 5.
    let mut img = Image::filled(5, 5, 1, 0).unwrap();
    img.pixel_mut(2, 2)[0] = 130;
    enhance::sharpness(&mut img, 0.5, &mut scratch);
    #[rustfmt::skip]
    let want = [
        0, 0, 0, 0, 0,
        0, 5, 5, 5, 0,
        0, 5, 90, 5, 0,
        0, 5, 5, 5, 0,
        0, 0, 0, 0, 0,
    ];
    assert_eq!(img.data(), &want);
}

// ---- geometry: Rotate, ShearX/Y, TranslateX/Y ----

#[test]
fn rotate_a_single_pixel() {
    let mut scratch = Image::default();
    // +90 on a square image: a quarter turn counter-clockwise; right of centre -> above it.
    let mut img = one_bright(5, 5, 3, 2);
    geometry::rotate(&mut img, 90.0, 128, &mut scratch);
    assert_eq!(positions(&img, 255), vec![(2, 1)]);
    assert!(positions(&img, 128).is_empty(), "a quarter turn uncovers nothing");
    // -30 (clockwise) on 7x7: the pixel 2 right of centre, at offset (2, 0), goes to
    // (2 cos 30, 2 sin 30) = (1.73, 1.0) below-right: pixel (5, 4). The 8 fill pixels are
    // the uncovered corners (count recorded from Pillow).
    let mut img = one_bright(7, 7, 5, 3);
    geometry::rotate(&mut img, -30.0, 128, &mut scratch);
    assert_eq!(positions(&img, 255), vec![(5, 4)]);
    let fill = positions(&img, 128);
    assert_eq!(fill.len(), 8);
    assert!(fill.iter().all(|&(x, y)| !(2..=4).contains(&x) && !(2..=4).contains(&y)), "{fill:?}");
    // -90 is 270: a quarter turn clockwise; right of centre -> below it.
    let mut img = one_bright(5, 5, 3, 2);
    geometry::rotate(&mut img, -90.0, 0, &mut scratch);
    assert_eq!(positions(&img, 255), vec![(2, 3)]);
}

#[test]
fn shear_a_single_pixel() {
    let mut scratch = Image::default();
    // ShearX 0.5: output (x, y) samples input x = floor(x + 0.5 + 0.5 (y + 0.5)). Row 2:
    // floor(x + 1.75) = 1 at x = 0. Fill where that is >= 6: (5,1), (5,2), (4,3), (5,3).
    let mut img = one_bright(6, 4, 1, 2);
    geometry::shear_x(&mut img, 0.5, 128, &mut scratch);
    assert_eq!(positions(&img, 255), vec![(0, 2)]);
    assert_eq!(positions(&img, 128), vec![(5, 1), (5, 2), (4, 3), (5, 3)]);
    // ShearY -0.5: input y = floor(y + 0.25 - 0.5 x). Column 2: floor(y - 0.75) = 1 at y = 2.
    // Fill where that is negative: (1,0), (2,0), (3,0), (3,1).
    let mut img = one_bright(4, 6, 2, 1);
    geometry::shear_y(&mut img, -0.5, 128, &mut scratch);
    assert_eq!(positions(&img, 255), vec![(2, 2)]);
    assert_eq!(positions(&img, 128), vec![(1, 0), (2, 0), (3, 0), (3, 1)]);
}

#[test]
fn translate_a_single_pixel() {
    let mut scratch = Image::default();
    // +3: output x samples input x + 3, so content moves 3 left; the last 3 columns fill.
    let mut img = one_bright(8, 3, 5, 1);
    geometry::translate_x(&mut img, 3, 128, &mut scratch);
    assert_eq!(positions(&img, 255), vec![(2, 1)]);
    assert_eq!(positions(&img, 128).len(), 9);
    assert!(positions(&img, 128).iter().all(|&(x, _)| x >= 5));
    // -2 vertically: content moves 2 down; the first 2 rows fill.
    let mut img = one_bright(3, 8, 1, 2);
    geometry::translate_y(&mut img, -2, 128, &mut scratch);
    assert_eq!(positions(&img, 255), vec![(1, 4)]);
    assert!(positions(&img, 128).iter().all(|&(_, y)| y < 2));
    assert_eq!(positions(&img, 128).len(), 6);
}

#[test]
fn identity_changes_nothing() {
    let src = Image::new(2, 2, 3, (0..12).map(|v| v * 20).collect()).unwrap();
    let mut img = src.clone();
    let mut scratch = Image::default();
    let param = RandAugmentOp::Identity.apply(&mut img, 9, true, 128, &mut scratch);
    assert_eq!(param, OpParam::None);
    assert_eq!(img, src);
}

// ---- Cutout ----

#[test]
fn cutout_paints_a_clipped_square() {
    let mut img = Image::filled(10, 10, 3, 0).unwrap();
    cutout::fill_square(&mut img, 3, 4, 5, 127);
    for y in 0..10 {
        for x in 0..10 {
            let inside = (3..8).contains(&x) && (4..9).contains(&y);
            assert_eq!(img.pixel(x, y), if inside { &[127u8; 3] } else { &[0u8; 3] }, "({x},{y})");
        }
    }
    // Clipped at the right and bottom edges.
    let mut img = Image::filled(10, 10, 1, 0).unwrap();
    cutout::fill_square(&mut img, 7, 8, 5, 127);
    assert_eq!(positions(&img, 127).len(), 3 * 2);
}

// ---- outputs recorded from Pillow 13.0 ----

/// The 6x5 RGB image the recordings were made from: (x*97 + y*57 + c*31 + x*y*13) mod 256.
fn textured() -> Image {
    let mut data = Vec::new();
    for y in 0..5usize {
        for x in 0..6usize {
            for c in 0..3usize {
                data.push(((x * 97 + y * 57 + c * 31 + x * y * 13) % 256) as u8);
            }
        }
    }
    Image::new(6, 5, 3, data).unwrap()
}

// img.rotate(-30, fillcolor=(128,)*3)
const ROTATE_M30: [u8; 90] = [
    128, 128, 128, 57, 88, 119, 167, 198, 229, 194, 225, 0, 35, 66, 97, 128, 128, 128, 114, 145, 176, 237, 12, 43, 21,
    52, 83, 21, 52, 83, 35, 66, 97, 132, 163, 194, 171, 202, 233, 51, 82, 113, 104, 135, 166, 227, 2, 33, 241, 16, 47,
    95, 126, 157, 121, 152, 183, 14, 45, 76, 67, 98, 129, 67, 98, 129, 94, 125, 156, 217, 248, 23, 128, 128, 128, 14,
    45, 76, 163, 194, 225, 203, 234, 9, 83, 114, 145, 128, 128, 128,
];
// img.rotate(21, fillcolor=(128,)*3)
const ROTATE_21: [u8; 90] = [
    128, 128, 128, 194, 225, 0, 35, 66, 97, 132, 163, 194, 95, 126, 157, 128, 128, 128, 97, 128, 159, 167, 198, 229,
    21, 52, 83, 131, 162, 193, 94, 125, 156, 217, 248, 23, 57, 88, 119, 167, 198, 229, 104, 135, 166, 227, 2, 33, 203,
    234, 9, 83, 114, 145, 114, 145, 176, 237, 12, 43, 187, 218, 249, 67, 98, 129, 203, 234, 9, 56, 87, 118, 128, 128,
    128, 171, 202, 233, 121, 152, 183, 14, 45, 76, 163, 194, 225, 128, 128, 128,
];
// img.transform(img.size, AFFINE, (1, 0.27, 0, 0, 1, 0), fillcolor=(128,)*3)
const SHEAR_X_027: [u8; 90] = [
    0, 31, 62, 97, 128, 159, 194, 225, 0, 35, 66, 97, 132, 163, 194, 229, 4, 35, 57, 88, 119, 167, 198, 229, 21, 52,
    83, 131, 162, 193, 241, 16, 47, 95, 126, 157, 237, 12, 43, 104, 135, 166, 227, 2, 33, 94, 125, 156, 217, 248, 23,
    128, 128, 128, 51, 82, 113, 187, 218, 249, 67, 98, 129, 203, 234, 9, 83, 114, 145, 128, 128, 128, 121, 152, 183,
    14, 45, 76, 163, 194, 225, 56, 87, 118, 205, 236, 11, 128, 128, 128,
];
// img.transform(img.size, AFFINE, (1, 0, 0, -0.12, 1, 0), fillcolor=(128,)*3)
const SHEAR_Y_M012: [u8; 90] = [
    0, 31, 62, 97, 128, 159, 194, 225, 0, 35, 66, 97, 128, 128, 128, 128, 128, 128, 57, 88, 119, 167, 198, 229, 21, 52,
    83, 131, 162, 193, 132, 163, 194, 229, 4, 35, 114, 145, 176, 237, 12, 43, 104, 135, 166, 227, 2, 33, 241, 16, 47,
    95, 126, 157, 171, 202, 233, 51, 82, 113, 187, 218, 249, 67, 98, 129, 94, 125, 156, 217, 248, 23, 228, 3, 34, 121,
    152, 183, 14, 45, 76, 163, 194, 225, 203, 234, 9, 83, 114, 145,
];
// ImageOps.autocontrast(img)
const AUTOCONTRAST: [u8; 90] = [
    0, 30, 63, 102, 130, 162, 205, 231, 0, 37, 66, 99, 139, 166, 198, 242, 2, 35, 60, 89, 121, 176, 203, 234, 22, 51,
    85, 138, 165, 197, 255, 14, 48, 100, 128, 160, 120, 148, 180, 250, 10, 44, 110, 137, 170, 240, 0, 33, 99, 127, 159,
    229, 255, 23, 180, 207, 238, 53, 82, 115, 197, 223, 255, 70, 99, 132, 214, 240, 9, 87, 116, 148, 241, 1, 34, 128,
    155, 187, 14, 44, 77, 172, 199, 230, 59, 88, 120, 216, 242, 11,
];
// ImageEnhance.Sharpness(img).enhance(0.5)
const SHARPNESS_05: [u8; 90] = [
    0, 31, 62, 97, 128, 159, 194, 225, 0, 35, 66, 97, 132, 163, 194, 229, 4, 35, 57, 88, 119, 147, 168, 189, 60, 71,
    93, 131, 142, 163, 211, 45, 66, 95, 126, 157, 114, 145, 176, 197, 51, 82, 114, 125, 156, 197, 41, 62, 113, 125,
    136, 217, 248, 23, 171, 202, 233, 80, 92, 123, 167, 178, 209, 86, 108, 129, 183, 204, 38, 83, 114, 145, 228, 3, 34,
    121, 152, 183, 14, 45, 76, 163, 194, 225, 56, 87, 118, 205, 236, 11,
];
// ImageEnhance.Color(img).enhance(0.41)
const COLOR_041: [u8; 90] = [
    14, 27, 40, 111, 124, 137, 191, 204, 112, 49, 62, 75, 146, 159, 172, 138, 45, 58, 71, 84, 97, 181, 194, 207, 35,
    48, 61, 145, 158, 171, 150, 57, 70, 109, 122, 135, 128, 141, 154, 146, 53, 66, 118, 131, 144, 136, 43, 56, 108,
    121, 134, 214, 227, 135, 185, 198, 211, 65, 78, 91, 201, 214, 227, 81, 94, 107, 200, 213, 121, 97, 110, 123, 137,
    44, 57, 135, 148, 161, 28, 41, 54, 177, 190, 203, 70, 83, 96, 202, 215, 123,
];
// ImageEnhance.Contrast(img).enhance(0.32)
const CONTRAST_032: [u8; 90] = [
    83, 93, 103, 114, 124, 134, 145, 155, 83, 94, 104, 114, 125, 135, 145, 156, 84, 94, 101, 111, 121, 137, 147, 156,
    90, 100, 110, 125, 135, 145, 160, 88, 98, 114, 123, 133, 120, 130, 139, 159, 87, 97, 116, 126, 136, 156, 84, 94,
    113, 123, 133, 153, 163, 91, 138, 148, 158, 99, 109, 119, 143, 153, 163, 105, 115, 124, 148, 158, 86, 110, 120,
    130, 156, 84, 94, 122, 132, 142, 88, 98, 107, 135, 145, 155, 101, 111, 121, 149, 159, 87,
];
// ImageEnhance.Brightness(img).enhance(0.86)
const BRIGHTNESS_086: [u8; 90] = [
    0, 26, 53, 83, 110, 136, 166, 193, 0, 30, 56, 83, 113, 140, 166, 196, 3, 30, 49, 75, 102, 143, 170, 196, 18, 44,
    71, 112, 139, 165, 207, 13, 40, 81, 108, 135, 98, 124, 151, 203, 10, 36, 89, 116, 142, 195, 1, 28, 80, 107, 134,
    186, 213, 19, 147, 173, 200, 43, 70, 97, 160, 187, 214, 57, 84, 110, 174, 201, 7, 71, 98, 124, 196, 2, 29, 104,
    130, 157, 12, 38, 65, 140, 166, 193, 48, 74, 101, 176, 202, 9,
];
// img.crop((1, 1, 5, 4)).resize((3, 5), BILINEAR): RandomResizedCrop's crop-then-resize,
// shrinking in x (4 -> 3) and enlarging in y (3 -> 5)
const RESIZED_CROP: [u8; 45] = [
    123, 154, 185, 76, 107, 138, 208, 60, 91, 153, 112, 143, 112, 92, 123, 178, 71, 102, 197, 49, 80, 166, 69, 100,
    134, 88, 119, 134, 93, 124, 143, 122, 153, 151, 151, 75, 92, 123, 154, 127, 158, 189, 162, 193, 45,
];

#[test]
fn resized_crop_matches_pillow_and_reads_only_the_window() {
    let src = textured();
    let window = crop::CropBox { left: 1, top: 1, width: 4, height: 3 };
    let (mut out, mut resizer) = (Image::default(), fast_image_resize::Resizer::new());
    crop::resized_crop_into(&src, window, 3, 5, &mut out, &mut resizer);
    assert_eq!((out.width(), out.height(), out.channels()), (3, 5, 3));
    // fast_image_resize rounds its intermediate rows differently from Pillow: 2 of the 45
    // values come out one level higher.
    let worst = out.data().iter().zip(RESIZED_CROP).map(|(a, b)| a.abs_diff(b)).max().unwrap();
    let off = out.data().iter().zip(RESIZED_CROP).filter(|(a, b)| **a != *b).count();
    assert!(worst <= 1 && off <= 2, "{off} values off Pillow, by up to {worst} levels: {:?}", out.data());
    // Pixels outside the window must not leak in through the filter's support.
    let mut painted = src.clone();
    for y in 0..5 {
        for x in 0..6 {
            if !(1..5).contains(&x) || !(1..4).contains(&y) {
                painted.pixel_mut(x, y).fill(255);
            }
        }
    }
    let mut again = Image::default();
    crop::resized_crop_into(&painted, window, 3, 5, &mut again, &mut resizer);
    assert_eq!(again, out);
    // And a larger case equals resizing a copy of the window, bit for bit.
    let big = Image::new(97, 61, 3, (0..97 * 61 * 3).map(|i| (i * 7 % 253) as u8).collect()).unwrap();
    let window = crop::CropBox { left: 13, top: 9, width: 55, height: 38 };
    let mut copied = Image::filled(55, 38, 3, 0).unwrap();
    for y in 0..38 {
        copied.row_mut(y).copy_from_slice(&big.row(9 + y)[13 * 3..68 * 3]);
    }
    let whole = crop::CropBox { left: 0, top: 0, width: 55, height: 38 };
    let (mut direct, mut via_copy) = (Image::default(), Image::default());
    for (w, h) in [(24, 24), (80, 50)] {
        crop::resized_crop_into(&big, window, w, h, &mut direct, &mut resizer);
        crop::resized_crop_into(&copied, whole, w, h, &mut via_copy, &mut resizer);
        assert_eq!(direct, via_copy, "{w}x{h}");
    }
}

#[test]
fn match_pillow_recordings() {
    let mut scratch = Image::default();
    let run = |f: &mut dyn FnMut(&mut Image, &mut Image)| {
        let mut img = textured();
        let mut s = Image::default();
        f(&mut img, &mut s);
        img
    };
    let cases: [(&str, Image, &[u8]); 9] = [
        ("rotate -30", run(&mut |i, s| geometry::rotate(i, -30.0, 128, s)), &ROTATE_M30),
        ("rotate 21", run(&mut |i, s| geometry::rotate(i, 21.0, 128, s)), &ROTATE_21),
        ("shear_x 0.27", run(&mut |i, s| geometry::shear_x(i, 0.27, 128, s)), &SHEAR_X_027),
        ("shear_y -0.12", run(&mut |i, s| geometry::shear_y(i, -0.12, 128, s)), &SHEAR_Y_M012),
        ("autocontrast", run(&mut |i, _| tone::autocontrast(i)), &AUTOCONTRAST),
        ("sharpness 0.5", run(&mut |i, s| enhance::sharpness(i, 0.5, s)), &SHARPNESS_05),
        ("color 0.41", run(&mut |i, _| enhance::color(i, 0.41)), &COLOR_041),
        ("contrast 0.32", run(&mut |i, _| enhance::contrast(i, 0.32)), &CONTRAST_032),
        ("brightness 0.86", run(&mut |i, _| enhance::brightness(i, 0.86)), &BRIGHTNESS_086),
    ];
    for (name, got, want) in cases {
        assert_eq!(got.data(), want, "{name}");
    }
    // The same ops through RandAugmentOp at the magnitude that gives those parameters:
    // m = 9, negative -> Rotate -27; m = 3 -> factor 0.32 (Contrast), here checked on Contrast.
    let mut img = textured();
    let p = RandAugmentOp::Contrast.apply(&mut img, 3, false, 128, &mut scratch);
    assert_eq!(p, OpParam::Factor(3.0 * 0.9 / 10.0 + 0.05));
    assert_eq!(img.data(), &CONTRAST_032);
}
