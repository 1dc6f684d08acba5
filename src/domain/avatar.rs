//! Avatars: the rules an upload must pass and the copies authql keeps.
//!
//! An upload is a PNG, JPEG or WebP of at most [`MAX_FILE_BYTES`], whose
//! declared type (the part's `Content-Type`, else its file name) agrees
//! with what its bytes are. Its pixel count is read from the header and
//! refused past [`MAX_PIXELS`] before anything is decoded, so a small file
//! that would decode to gigabytes (a decompression bomb) costs nothing.
//! What is kept is re-encoded from the pixels alone, turned upright by its
//! EXIF orientation first: every other byte of the upload (metadata,
//! location, trailing data) is gone. Two copies: [`SMALL_SIDE`] square
//! (cropped to fill) and the whole picture at most [`LARGE_MAX_SIDE`] a
//! side; PNG when the picture has transparency, else JPEG.
//!
//! CPU-bound: callers run [`process`] off the async workers.

use std::io::Cursor;

use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
use sha2::{Digest, Sha256};

use super::{FieldCode, FieldError};

/// Largest upload accepted (5 MiB).
pub const MAX_FILE_BYTES: usize = 5 * 1024 * 1024;
/// Largest picture decoded: 16.8 megapixels (4096 x 4096), about 64 MiB
/// of pixels; a 12 MP phone photo passes.
pub const MAX_PIXELS: u64 = 4096 * 4096;
/// Side of the square copy.
pub const SMALL_SIDE: u32 = 256;
/// Longest side of the full copy.
pub const LARGE_MAX_SIDE: u32 = 1024;
/// JPEG quality of the copies.
const JPEG_QUALITY: u8 = 85;
/// The field every problem is reported on.
const FIELD: &str = "file";

/// The format copies are stored (and served) in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AvatarFormat {
    Png,
    Jpeg,
}

impl AvatarFormat {
    pub fn name(self) -> &'static str {
        match self {
            AvatarFormat::Png => "png",
            AvatarFormat::Jpeg => "jpeg",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [AvatarFormat::Png, AvatarFormat::Jpeg]
            .into_iter()
            .find(|f| f.name() == name)
    }

    pub fn content_type(self) -> &'static str {
        match self {
            AvatarFormat::Png => "image/png",
            AvatarFormat::Jpeg => "image/jpeg",
        }
    }
}

/// Which stored copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AvatarSize {
    /// [`SMALL_SIDE`] square.
    Small,
    /// At most [`LARGE_MAX_SIDE`] a side.
    Original,
}

/// An uploaded file as the multipart request carried it.
#[derive(Debug, Clone)]
pub struct UploadedFile {
    pub filename: String,
    pub content_type: Option<String>,
    pub bytes: Vec<u8>,
}

/// The copies to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessedAvatar {
    /// Names this version in its URL: 32 hex digits of SHA-256 over both copies.
    pub hash: String,
    pub format: AvatarFormat,
    pub small: Vec<u8>,
    pub large: Vec<u8>,
    /// Size of the full copy.
    pub width: u32,
    pub height: u32,
}

/// The formats accepted, with their MIME types and file extensions.
const ACCEPTED: [(ImageFormat, &str, &[&str]); 3] = [
    (ImageFormat::Png, "image/png", &["png"]),
    (
        ImageFormat::Jpeg,
        "image/jpeg",
        &["jpg", "jpeg", "jpe", "jfif"],
    ),
    (ImageFormat::WebP, "image/webp", &["webp"]),
];

fn invalid(code: FieldCode, message: impl Into<String>) -> Vec<FieldError> {
    vec![FieldError::new(FIELD, code, message)]
}

/// The format the upload says it has: its `Content-Type`, unless that is
/// generic (absent, `application/octet-stream`), else its file extension.
/// `Err` for a declared type that is not an accepted image at all.
fn declared_format(file: &UploadedFile) -> Result<Option<ImageFormat>, Vec<FieldError>> {
    let mime = file
        .content_type
        .as_deref()
        .and_then(|t| t.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && t != "application/octet-stream");
    if let Some(mime) = mime {
        return match ACCEPTED.iter().find(|(_, m, _)| *m == mime) {
            Some((format, _, _)) => Ok(Some(*format)),
            None => Err(invalid(
                FieldCode::Invalid,
                format!("{mime} is not accepted: upload a PNG, JPEG or WebP image"),
            )),
        };
    }
    let extension = file
        .filename
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase());
    Ok(extension.and_then(|ext| {
        ACCEPTED
            .iter()
            .find(|(_, _, exts)| exts.contains(&ext.as_str()))
            .map(|(format, _, _)| *format)
    }))
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "PNG",
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::WebP => "WebP",
        _ => "image",
    }
}

/// Checks an upload by the rules above and makes the copies to store.
pub fn process(file: &UploadedFile) -> Result<ProcessedAvatar, Vec<FieldError>> {
    if file.bytes.len() > MAX_FILE_BYTES {
        return Err(invalid(
            FieldCode::TooLong,
            format!(
                "the file is {} bytes; at most {MAX_FILE_BYTES} (5 MiB) are accepted",
                file.bytes.len()
            ),
        ));
    }
    if file.bytes.is_empty() {
        return Err(invalid(
            FieldCode::FieldMissing,
            "no file was uploaded, or an empty one (send a multipart request)",
        ));
    }
    let declared = declared_format(file)?;
    let actual = image::guess_format(&file.bytes)
        .ok()
        .filter(|f| ACCEPTED.iter().any(|(a, _, _)| a == f))
        .ok_or_else(|| {
            invalid(
                FieldCode::Invalid,
                "the file is not a PNG, JPEG or WebP image",
            )
        })?;
    if let Some(declared) = declared.filter(|d| *d != actual) {
        return Err(invalid(
            FieldCode::Invalid,
            format!(
                "the file is a {}, not the {} it says it is",
                format_name(actual),
                format_name(declared)
            ),
        ));
    }
    let too_big = |width: u32, height: u32| {
        invalid(
            FieldCode::OutOfRange,
            format!(
                "the image is {width}x{height} pixels; at most {MAX_PIXELS} pixels (4096x4096) are accepted"
            ),
        )
    };
    let damaged = |e: image::ImageError| match e {
        image::ImageError::Limits(_) => invalid(
            FieldCode::OutOfRange,
            format!("the image is too large to decode; at most {MAX_PIXELS} pixels are accepted"),
        ),
        _ => invalid(FieldCode::Invalid, "the image cannot be read (damaged?)"),
    };
    let mut reader = ImageReader::new(Cursor::new(&file.bytes));
    reader.set_format(actual);
    let mut limits = Limits::default();
    // A second line behind the pixel count: decoders' own buffers.
    limits.max_alloc = Some(MAX_PIXELS * 4 * 2);
    reader.limits(limits);
    // Reads the header only.
    let mut decoder = reader.into_decoder().map_err(damaged)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(too_big(width, height));
    }
    if width == 0 || height == 0 {
        return Err(invalid(FieldCode::Invalid, "the image has no pixels"));
    }
    let orientation = decoder.orientation().map_err(damaged)?;
    let mut picture = DynamicImage::from_decoder(decoder).map_err(damaged)?;
    picture.apply_orientation(orientation);
    copies(picture).map_err(|_| invalid(FieldCode::Invalid, "the image cannot be re-encoded"))
}

/// The two copies, encoded.
fn copies(picture: DynamicImage) -> image::ImageResult<ProcessedAvatar> {
    let (format, picture) = if picture.has_alpha() {
        (
            AvatarFormat::Png,
            DynamicImage::ImageRgba8(picture.to_rgba8()),
        )
    } else {
        (
            AvatarFormat::Jpeg,
            DynamicImage::ImageRgb8(picture.to_rgb8()),
        )
    };
    let large = if picture.width().max(picture.height()) > LARGE_MAX_SIDE {
        picture.resize(LARGE_MAX_SIDE, LARGE_MAX_SIDE, FilterType::Triangle)
    } else {
        picture
    };
    let small = large.resize_to_fill(SMALL_SIDE, SMALL_SIDE, FilterType::Lanczos3);
    let (small_bytes, large_bytes) = (encode(&small, format)?, encode(&large, format)?);
    let digest = Sha256::new()
        .chain_update(format.name())
        .chain_update((small_bytes.len() as u64).to_be_bytes())
        .chain_update(&small_bytes)
        .chain_update(&large_bytes)
        .finalize();
    Ok(ProcessedAvatar {
        hash: digest[..16].iter().map(|b| format!("{b:02x}")).collect(),
        format,
        width: large.width(),
        height: large.height(),
        small: small_bytes,
        large: large_bytes,
    })
}

fn encode(picture: &DynamicImage, format: AvatarFormat) -> image::ImageResult<Vec<u8>> {
    let mut out = Vec::new();
    match format {
        AvatarFormat::Png => picture.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)?,
        AvatarFormat::Jpeg => {
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY)
                .encode_image(picture)?
        }
    }
    Ok(out)
}

/// Whether `hash` has the shape [`ProcessedAvatar::hash`] has (checked
/// before a URL's hash is looked up).
pub fn is_avatar_hash(hash: &str) -> bool {
    hash.len() == 32 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage, Rgba, RgbaImage};

    fn png(image: DynamicImage) -> Vec<u8> {
        let mut out = Vec::new();
        image
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .expect("encode");
        out
    }

    fn upload(name: &str, content_type: Option<&str>, bytes: Vec<u8>) -> UploadedFile {
        UploadedFile {
            filename: name.into(),
            content_type: content_type.map(str::to_owned),
            bytes,
        }
    }

    fn codes(result: Result<ProcessedAvatar, Vec<FieldError>>) -> Vec<(String, FieldCode)> {
        result
            .expect_err("refused")
            .into_iter()
            .map(|e| (e.field, e.code))
            .collect()
    }

    #[test]
    fn an_opaque_photo_becomes_two_jpegs_of_the_documented_sizes() {
        let photo = DynamicImage::ImageRgb8(RgbImage::from_pixel(2000, 1000, Rgb([200, 10, 10])));
        let avatar = process(&upload("me.png", Some("image/png"), png(photo))).expect("accepted");
        assert_eq!(avatar.format, AvatarFormat::Jpeg);
        assert_eq!((avatar.width, avatar.height), (1024, 512));
        let small = image::load_from_memory(&avatar.small).expect("decodes");
        assert_eq!((small.width(), small.height()), (256, 256));
        assert!(is_avatar_hash(&avatar.hash));
    }

    #[test]
    fn transparency_keeps_png_and_small_pictures_are_not_enlarged() {
        let logo = DynamicImage::ImageRgba8(RgbaImage::from_pixel(100, 50, Rgba([0, 0, 0, 0])));
        let avatar = process(&upload("logo", None, png(logo))).expect("accepted");
        assert_eq!(avatar.format, AvatarFormat::Png);
        assert_eq!((avatar.width, avatar.height), (100, 50));
        let small = image::load_from_memory(&avatar.small).expect("decodes");
        assert_eq!((small.width(), small.height()), (256, 256));
    }

    #[test]
    fn lies_texts_and_damaged_files_are_refused() {
        let photo = png(DynamicImage::ImageRgb8(RgbImage::new(10, 10)));
        let field = |code| vec![("file".to_owned(), code)];
        assert_eq!(
            codes(process(&upload("a.jpg", Some("image/jpeg"), photo.clone()))),
            field(FieldCode::Invalid)
        );
        assert_eq!(
            codes(process(&upload("a.jpg", None, photo.clone()))),
            field(FieldCode::Invalid)
        );
        assert_eq!(
            codes(process(&upload("a.png", Some("text/plain"), photo.clone()))),
            field(FieldCode::Invalid)
        );
        assert_eq!(
            codes(process(&upload(
                "a.png",
                Some("image/png"),
                b"hello".to_vec()
            ))),
            field(FieldCode::Invalid)
        );
        let mut cut = photo.clone();
        cut.truncate(40);
        assert_eq!(
            codes(process(&upload("a.png", None, cut))),
            field(FieldCode::Invalid)
        );
        assert_eq!(
            codes(process(&upload("a.png", None, Vec::new()))),
            field(FieldCode::FieldMissing)
        );
        assert_eq!(
            codes(process(&upload("a.png", None, vec![0; MAX_FILE_BYTES + 1]))),
            field(FieldCode::TooLong)
        );
        // Accepted: the generic type defers to the name, which agrees.
        assert!(process(&upload("a.PNG", Some("application/octet-stream"), photo)).is_ok());
    }

    #[test]
    fn a_bomb_is_refused_by_its_header() {
        // A valid PNG header announcing 20000x20000 pixels, and no pixels.
        let mut bomb = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend(20000u32.to_be_bytes());
        ihdr.extend(20000u32.to_be_bytes());
        ihdr.extend([8, 0, 0, 0, 0]);
        let mut chunk = |data: &[u8]| {
            bomb.extend(u32::try_from(data.len() - 4).expect("short").to_be_bytes());
            bomb.extend(data);
            bomb.extend(crc32(data).to_be_bytes());
        };
        chunk(&ihdr);
        chunk(b"IDAT\x78\x9c\x03\x00\x00\x00\x00\x01");
        chunk(b"IEND");
        assert_eq!(
            codes(process(&upload("bomb.png", Some("image/png"), bomb))),
            vec![("file".to_owned(), FieldCode::OutOfRange)]
        );
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}
