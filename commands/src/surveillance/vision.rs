//! Frames and what is detected on them: the [`Detector`] trait, the [`MotionDetector`] (a
//! background subtraction on a small grayscale grid) and [`encode_jpeg`] for thumbnails and
//! snapshots.
//!
//! Everything here is synchronous CPU work with no IO and no clock: time is the frames' own
//! timestamps ([`Frame::at`]), so detections are deterministic and testable. The pipeline
//! (`super::capture`) runs it off the async runtime's threads.

use std::time::Duration;

use atelier_domain::surveillance::camera::MotionSettings;
use chrono::{DateTime, TimeDelta, Utc};
use image::codecs::jpeg::JpegEncoder;
use image::{ExtendedColorType, ImageBuffer, Rgb, imageops};
use serde::Serialize;

/// One picture from a camera: packed RGB, 3 bytes a pixel, row after row.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// rgb24: `width * height * 3` bytes.
    pub rgb: Vec<u8>,
    /// Its number in the capture that read it (from 0, per attempt).
    pub seq: u64,
    /// When it was read.
    pub at: DateTime<Utc>,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("bytes", &self.rgb.len())
            .field("seq", &self.seq)
            .field("at", &self.at)
            .finish()
    }
}

impl Frame {
    /// Whether its buffer holds exactly `width * height` RGB pixels (and at least one).
    pub fn is_consistent(&self) -> bool {
        self.width > 0
            && self.height > 0
            && Some(self.rgb.len())
                == (self.width as usize)
                    .checked_mul(self.height as usize)
                    .and_then(|n| n.checked_mul(3))
    }
}

/// Something a detector saw on a frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// What: `"motion"` (an object model would say `"person"`, `"car"`…).
    pub kind: &'static str,
    /// How sure, from 0 to 1.
    pub confidence: f64,
    /// Where: x, y, width, height as shares (0 to 1) of the frame's width and height.
    pub bbox: [f64; 4],
}

/// Looks at frames, one after the other, and says what it saw.
///
/// A detector keeps state between frames (the motion detector's background), so it takes
/// `&mut self`; the pipeline owns one per camera and calls it from a blocking thread, hence
/// `Send`. This is where an object model (YOLO through ONNX Runtime, say) plugs in later: a
/// `Detector` whose `detect` runs the model on the frame and maps its boxes to [`Finding`]s
/// with the class name as `kind`; nothing else in the pipeline changes.
pub trait Detector: Send {
    /// Its name, for logs and telemetry.
    fn name(&self) -> &'static str;

    /// What it sees on this frame (often nothing).
    fn detect(&mut self, frame: &Frame) -> Vec<Finding>;

    /// The source was reopened: forget what earlier frames taught (the next frame may show
    /// another scene). Nothing by default.
    fn reset(&mut self) {}
}

/// Width of the grid motion is analysed on, at most, in cells.
pub const ANALYSIS_WIDTH: u32 = 160;

/// Shortest time between two motion findings, unless told otherwise.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(5);

/// How much of each new frame goes into the background (a running average): slow enough that
/// a moving object stands out for several frames, fast enough that light that changes slowly
/// (the sun, a cloud) is absorbed within a few seconds.
const BACKGROUND_RATE: f32 = 0.1;

/// Motion detection by background subtraction.
///
/// Each frame is turned into a grayscale grid at most [`ANALYSIS_WIDTH`] cells wide (each cell
/// the average of a square of pixels: downscaling by box average also removes most sensor
/// noise), lightly blurred (3×3 box), and compared with a background: the running average of
/// the earlier grids (better than the previous frame alone: a slow object still differs from
/// the background, and one noisy frame does not make motion). Cells that differ by at least
/// [`MotionSettings::threshold`] are changed.
///
/// The changed cells are grouped into regions (8-connected) and only the **largest region**
/// counts, not the union of all changed cells: scattered noise, rain or leaves add up over a
/// whole frame to a large area while no single thing moved, whereas one object that moves
/// makes one region. If that region covers at least [`MotionSettings::min_area`] of the frame,
/// the frame has one `"motion"` finding with the region's bounding box and a confidence of
///
/// ```text
/// clamp(0.5 + 0.5 · log10((area / min_area) · (mean difference / threshold)), 0, 1)
/// ```
///
/// where the mean difference is over the region's cells: 0.5 just at the limits, 1 when area
/// and contrast together are ten times above them.
///
/// The first frame (and the first after a change of size or a [`Detector::reset`]) only
/// learns the background and never triggers. After a finding, none is made for `cooldown`,
/// measured on the frames' timestamps (a timestamp earlier than the last finding's, from a
/// clock set back, ends the cooldown). With `enabled: false` it finds nothing.
#[derive(Debug)]
pub struct MotionDetector {
    settings: MotionSettings,
    cooldown: TimeDelta,
    background: Option<Background>,
    last_finding_at: Option<DateTime<Utc>>,
}

#[derive(Debug)]
struct Background {
    grid: Grid,
    average: Vec<f32>,
}

/// How a frame maps to the analysis grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Grid {
    frame_width: u32,
    frame_height: u32,
    /// Side of a cell, in pixels.
    cell: u32,
    width: u32,
    height: u32,
}

impl Grid {
    fn of(frame: &Frame) -> Self {
        let cell = frame.width.div_ceil(ANALYSIS_WIDTH).max(1);
        Self {
            frame_width: frame.width,
            frame_height: frame.height,
            cell,
            width: frame.width.div_ceil(cell),
            height: frame.height.div_ceil(cell),
        }
    }

    fn len(&self) -> usize {
        self.width as usize * self.height as usize
    }

    /// Pixels of the frame in column `gx` (the last one may be narrower).
    fn cell_width(&self, gx: u32) -> u32 {
        self.cell.min(self.frame_width - gx * self.cell)
    }

    fn cell_height(&self, gy: u32) -> u32 {
        self.cell.min(self.frame_height - gy * self.cell)
    }

    /// The frame in grayscale (BT.601 luma), each cell the average of its pixels.
    fn luma(&self, frame: &Frame) -> Vec<f32> {
        let mut sums = vec![0u32; self.len()];
        let row_bytes = frame.width as usize * 3;
        for (y, row) in frame.rgb.chunks_exact(row_bytes).enumerate() {
            let base = (y as u32 / self.cell) as usize * self.width as usize;
            for (x, px) in row.chunks_exact(3).enumerate() {
                let luma =
                    (77 * u32::from(px[0]) + 150 * u32::from(px[1]) + 29 * u32::from(px[2]) + 128)
                        >> 8;
                sums[base + (x as u32 / self.cell) as usize] += luma;
            }
        }
        let mut out = Vec::with_capacity(self.len());
        for gy in 0..self.height {
            for gx in 0..self.width {
                let n = self.cell_width(gx) * self.cell_height(gy);
                out.push(sums[(gy * self.width + gx) as usize] as f32 / n as f32);
            }
        }
        out
    }

    /// A 3×3 box blur, the edges clamped.
    fn blur(&self, values: &[f32]) -> Vec<f32> {
        let (w, h) = (self.width as i64, self.height as i64);
        let mut out = Vec::with_capacity(values.len());
        for y in 0..h {
            for x in 0..w {
                let mut sum = 0.0;
                for dy in -1..=1 {
                    for dx in -1..=1 {
                        let (sx, sy) = ((x + dx).clamp(0, w - 1), (y + dy).clamp(0, h - 1));
                        sum += values[(sy * w + sx) as usize];
                    }
                }
                out.push(sum / 9.0);
            }
        }
        out
    }
}

/// A connected region of changed cells.
#[derive(Debug, Default)]
struct Region {
    /// Frame pixels it covers.
    pixels: u64,
    /// Sum of its cells' differences.
    difference: f64,
    cells: u32,
    min: (u32, u32),
    max: (u32, u32),
}

impl MotionDetector {
    /// A detector with these settings and the shortest time between two findings.
    pub fn new(settings: MotionSettings, cooldown: Duration) -> Self {
        Self {
            settings,
            cooldown: TimeDelta::from_std(cooldown).unwrap_or(TimeDelta::MAX),
            background: None,
            last_finding_at: None,
        }
    }

    fn in_cooldown(&self, at: DateTime<Utc>) -> bool {
        self.last_finding_at.is_some_and(|last| {
            let since = at - last;
            since >= TimeDelta::zero() && since < self.cooldown
        })
    }

    /// The largest 8-connected region of changed cells.
    fn largest_region(grid: &Grid, changed: &[Option<f32>]) -> Option<Region> {
        let mut seen = vec![false; changed.len()];
        let mut stack = Vec::new();
        let mut best: Option<Region> = None;
        for start in 0..changed.len() {
            if seen[start] || changed[start].is_none() {
                continue;
            }
            let mut region = Region {
                min: (u32::MAX, u32::MAX),
                ..Region::default()
            };
            seen[start] = true;
            stack.push(start);
            while let Some(i) = stack.pop() {
                let (gx, gy) = (i as u32 % grid.width, i as u32 / grid.width);
                region.cells += 1;
                region.pixels += u64::from(grid.cell_width(gx) * grid.cell_height(gy));
                region.difference += f64::from(changed[i].unwrap_or_default());
                region.min = (region.min.0.min(gx), region.min.1.min(gy));
                region.max = (region.max.0.max(gx), region.max.1.max(gy));
                for dy in -1i64..=1 {
                    for dx in -1i64..=1 {
                        let (nx, ny) = (i64::from(gx) + dx, i64::from(gy) + dy);
                        if nx < 0
                            || ny < 0
                            || nx >= i64::from(grid.width)
                            || ny >= i64::from(grid.height)
                        {
                            continue;
                        }
                        let n = (ny * i64::from(grid.width) + nx) as usize;
                        if !seen[n] && changed[n].is_some() {
                            seen[n] = true;
                            stack.push(n);
                        }
                    }
                }
            }
            if best.as_ref().is_none_or(|b| region.pixels > b.pixels) {
                best = Some(region);
            }
        }
        best
    }
}

impl From<MotionSettings> for MotionDetector {
    /// A detector with the [`DEFAULT_COOLDOWN`].
    fn from(settings: MotionSettings) -> Self {
        Self::new(settings, DEFAULT_COOLDOWN)
    }
}

impl Detector for MotionDetector {
    fn name(&self) -> &'static str {
        "motion"
    }

    fn detect(&mut self, frame: &Frame) -> Vec<Finding> {
        if !self.settings.enabled || !frame.is_consistent() {
            return Vec::new();
        }
        let grid = Grid::of(frame);
        let current = grid.blur(&grid.luma(frame));
        let background = match &mut self.background {
            Some(b) if b.grid == grid => b,
            _ => {
                self.background = Some(Background {
                    grid,
                    average: current,
                });
                return Vec::new();
            }
        };
        let threshold = f32::from(self.settings.threshold.max(1));
        let changed: Vec<Option<f32>> = current
            .iter()
            .zip(&background.average)
            .map(|(c, b)| Some((c - b).abs()).filter(|d| *d >= threshold))
            .collect();
        for (b, c) in background.average.iter_mut().zip(&current) {
            *b += BACKGROUND_RATE * (c - *b);
        }
        if self.in_cooldown(frame.at) {
            return Vec::new();
        }
        let Some(region) = Self::largest_region(&grid, &changed) else {
            return Vec::new();
        };
        let frame_pixels = f64::from(frame.width) * f64::from(frame.height);
        let area = region.pixels as f64 / frame_pixels;
        let min_area = self.settings.min_area.max(f64::MIN_POSITIVE);
        if area < min_area {
            return Vec::new();
        }
        let mean_difference = region.difference / f64::from(region.cells);
        let excess = (area / min_area) * (mean_difference / f64::from(threshold));
        let confidence = (0.5 + 0.5 * excess.log10()).clamp(0.0, 1.0);
        let x0 = region.min.0 * grid.cell;
        let y0 = region.min.1 * grid.cell;
        let x1 = (region.max.0 * grid.cell + grid.cell_width(region.max.0)).min(frame.width);
        let y1 = (region.max.1 * grid.cell + grid.cell_height(region.max.1)).min(frame.height);
        let (fw, fh) = (f64::from(frame.width), f64::from(frame.height));
        self.last_finding_at = Some(frame.at);
        vec![Finding {
            kind: "motion",
            confidence,
            bbox: [
                f64::from(x0) / fw,
                f64::from(y0) / fh,
                f64::from(x1 - x0) / fw,
                f64::from(y1 - y0) / fh,
            ],
        }]
    }

    fn reset(&mut self) {
        self.background = None;
    }
}

/// A frame as a JPEG, scaled down (keeping its aspect ratio) if it is wider than `max_width`;
/// `quality` from 1 to 100 (clamped). An inconsistent frame ([`Frame::is_consistent`]) gives
/// an empty vector.
///
/// The `image` crate (without default features, only `jpeg`) does the work: it is the
/// maintained reference for images in Rust, its encoder is pure Rust, its `thumbnail` is a fast
/// area-averaging downscale (what a shrink wants), and the same crate decodes (zune-jpeg) for
/// the tests and for whoever wants to read a snapshot back. `jpeg-encoder` alone would encode a
/// bit faster but decodes nothing and resizes nothing.
pub fn encode_jpeg(frame: &Frame, max_width: u32, quality: u8) -> Vec<u8> {
    if !frame.is_consistent() {
        return Vec::new();
    }
    let quality = quality.clamp(1, 100);
    let max_width = max_width.max(1);
    let mut out = Vec::new();
    let mut encoder = JpegEncoder::new_with_quality(&mut out, quality);
    let written = if frame.width > max_width {
        let height = (u64::from(frame.height) * u64::from(max_width) + u64::from(frame.width) / 2)
            / u64::from(frame.width);
        let height = u32::try_from(height.max(1)).unwrap_or(u32::MAX);
        let Some(view) =
            ImageBuffer::<Rgb<u8>, &[u8]>::from_raw(frame.width, frame.height, &frame.rgb[..])
        else {
            return Vec::new();
        };
        let small = imageops::thumbnail(&view, max_width, height);
        encoder.encode(small.as_raw(), max_width, height, ExtendedColorType::Rgb8)
    } else {
        encoder.encode(
            &frame.rgb,
            frame.width,
            frame.height,
            ExtendedColorType::Rgb8,
        )
    };
    match written {
        Ok(()) => out,
        Err(e) => {
            tracing::warn!(error = %e, width = frame.width, height = frame.height, "a frame could not be encoded as JPEG");
            Vec::new()
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A dark frame with a bright square at (x, y), `side` pixels wide, and a little
    /// deterministic noise everywhere (a real sensor is never still).
    pub(crate) fn frame_with_square(
        width: u32,
        height: u32,
        square: Option<(u32, u32, u32)>,
        seq: u64,
        at: DateTime<Utc>,
    ) -> Frame {
        let mut rgb = Vec::with_capacity((width * height * 3) as usize);
        let mut noise = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for y in 0..height {
            for x in 0..width {
                noise ^= noise << 13;
                noise ^= noise >> 7;
                noise ^= noise << 17;
                let inside = square.is_some_and(|(sx, sy, side)| {
                    (sx..sx + side).contains(&x) && (sy..sy + side).contains(&y)
                });
                let base: u8 = if inside { 230 } else { 20 };
                let v = base.saturating_add((noise % 9) as u8).saturating_sub(4);
                rgb.extend_from_slice(&[v, v, v]);
            }
        }
        Frame {
            width,
            height,
            rgb,
            seq,
            at,
        }
    }

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-01-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn at(ms: i64) -> DateTime<Utc> {
        t0() + TimeDelta::milliseconds(ms)
    }

    fn detector(min_area: f64) -> MotionDetector {
        MotionDetector::from(MotionSettings {
            enabled: true,
            threshold: 25,
            min_area,
        })
    }

    #[test]
    fn a_still_scene_never_triggers() {
        let mut motion = detector(0.0001);
        for seq in 0..50 {
            let frame = frame_with_square(320, 240, Some((100, 80, 40)), seq, at(seq as i64 * 200));
            assert!(motion.detect(&frame).is_empty(), "frame {seq}");
        }
    }

    #[test]
    fn the_first_frame_never_triggers_even_after_a_change_of_size() {
        let mut motion = detector(0.0001);
        assert!(
            motion
                .detect(&frame_with_square(320, 240, None, 0, at(0)))
                .is_empty()
        );
        let other = frame_with_square(640, 480, Some((0, 0, 400)), 1, at(200));
        assert!(motion.detect(&other).is_empty());
    }

    #[test]
    fn a_moving_square_triggers_with_a_bbox_around_it() {
        let mut motion = detector(0.01);
        // An empty scene first: the background learns it.
        for seq in 0..5 {
            let empty = frame_with_square(640, 360, None, seq, at(seq as i64 * 200));
            assert!(motion.detect(&empty).is_empty());
        }
        // Then a square comes in at (300, 140), 80 pixels wide.
        let frame = frame_with_square(640, 360, Some((300, 140, 80)), 5, at(1000));
        let found = motion.detect(&frame);
        assert_eq!(found.len(), 1, "{found:?}");
        let f = &found[0];
        assert_eq!(f.kind, "motion");
        assert!((0.5..=1.0).contains(&f.confidence), "{f:?}");
        let [x, y, w, h] = f.bbox;
        let (x0, y0, x1, y1) = (x * 640.0, y * 360.0, (x + w) * 640.0, (y + h) * 360.0);
        // Around the square, give or take the blur (a cell of 4 pixels on each side).
        assert!((290.0..=300.0).contains(&x0), "{x0}");
        assert!((380.0..=390.0).contains(&x1), "{x1}");
        assert!((130.0..=140.0).contains(&y0), "{y0}");
        assert!((220.0..=230.0).contains(&y1), "{y1}");
    }

    #[test]
    fn an_area_below_min_area_does_not_trigger() {
        // A 12-pixel square in 320x240 is 0.19% of the frame (with its trail in the running
        // background, well under 1%); the minimum is 5%.
        let mut motion = detector(0.05);
        for seq in 0..20u32 {
            let frame = frame_with_square(
                320,
                240,
                Some((10 + seq * 8, 100, 12)),
                seq.into(),
                at(i64::from(seq) * 6000),
            );
            assert!(motion.detect(&frame).is_empty(), "frame {seq}");
        }
        // The same motion with a lower minimum does.
        let mut lower = detector(0.001);
        let found: usize = (0..20u32)
            .map(|seq| {
                let frame = frame_with_square(
                    320,
                    240,
                    Some((10 + seq * 8, 100, 12)),
                    seq.into(),
                    at(i64::from(seq) * 6000),
                );
                lower.detect(&frame).len()
            })
            .sum();
        assert!(found > 0);
    }

    #[test]
    fn the_cooldown_holds_on_frame_timestamps() {
        let mut motion = MotionDetector::new(MotionSettings::default(), Duration::from_secs(5));
        // Continuous motion for 8 s at 5 frames a second.
        let hits: Vec<u64> = (0..40u64)
            .filter(|&seq| {
                let x = 20 + (seq as u32 * 40) % 400;
                let frame =
                    frame_with_square(640, 360, Some((x, 100, 100)), seq, at(seq as i64 * 200));
                !motion.detect(&frame).is_empty()
            })
            .collect();
        // The first motion (frame 1, at 0.2 s), then the first frame 5 s later (5.2 s).
        assert_eq!(hits, vec![1, 26]);
    }

    #[test]
    fn a_disabled_detector_finds_nothing() {
        let mut motion = MotionDetector::from(MotionSettings {
            enabled: false,
            ..MotionSettings::default()
        });
        for seq in 0..5u32 {
            let frame = frame_with_square(
                320,
                240,
                Some((seq * 40, 50, 100)),
                seq.into(),
                at(i64::from(seq) * 200),
            );
            assert!(motion.detect(&frame).is_empty());
        }
    }

    #[test]
    fn the_jpeg_starts_with_ff_d8_and_decodes_to_the_expected_size() {
        let frame = frame_with_square(640, 480, Some((10, 10, 50)), 0, t0());
        let jpeg = encode_jpeg(&frame, 320, 80);
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
        let decoded = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (320, 240));

        // Narrower than the limit: kept as it is.
        let small = encode_jpeg(&frame_with_square(200, 150, None, 0, t0()), 320, 80);
        let decoded =
            image::load_from_memory_with_format(&small, image::ImageFormat::Jpeg).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (200, 150));

        // A frame whose buffer does not match its size is refused, not a panic.
        let broken = Frame {
            rgb: vec![0; 10],
            ..frame
        };
        assert!(encode_jpeg(&broken, 320, 80).is_empty());
    }
}
