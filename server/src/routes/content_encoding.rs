//! The `Content-Encoding` of uploads: none (`identity`) or `zstd`, decoded here in small steps
//! so that a zstd bomb is refused after a few MiB instead of after the request limit.
//!
//! Each step hands at most [`STEP_BYTES`] decoded bytes on before the limits are checked
//! again: the decoded size may not pass the request limit, and past [`RATIO_FREE_BYTES`] it may
//! not pass `--max-compression-ratio` times the compressed bytes read so far. Real packs of
//! bytecode compress about 3 to 10 times; a bomb compresses a thousand times or more.

use axum::http::{header::CONTENT_ENCODING, HeaderMap};
use zstd::stream::raw::{DParameter, Decoder, InBuffer, Operation, OutBuffer};

use crate::config::Config;
use crate::error::AppError;

/// Decoded bytes a zstd body may have before the compression ratio is enforced, so that small
/// and very regular packs pass whatever their ratio.
pub const RATIO_FREE_BYTES: u64 = 1 << 20;

/// Largest zstd window decoded: 8 MiB (levels up to 19; `--ultra` levels and `--long` need more). The
/// default would let one body make the decoder allocate 128 MiB.
const WINDOW_LOG_MAX: u32 = 23;

/// Decoded bytes handed on per step.
const STEP_BYTES: usize = 64 << 10;

/// Turns the received chunks of a body into its decoded bytes, within the limits.
pub struct BodyDecoder {
    zstd: Option<ZstdBody>,
    max_decoded: u64,
    max_ratio: u64,
    /// Compressed bytes the decoder has taken in.
    compressed: u64,
    decoded: u64,
}

struct ZstdBody {
    decoder: Decoder<'static>,
    step: Vec<u8>,
    /// Whether the last frame ended: the last `run` that did anything returned 0.
    frame_done: bool,
}

impl BodyDecoder {
    /// The decoder for the request's `Content-Encoding`; 415 for an encoding the server does not
    /// read.
    pub fn for_request(headers: &HeaderMap, config: &Config) -> Result<Self, AppError> {
        let encoding = headers
            .get(CONTENT_ENCODING)
            .map(|v| v.to_str().unwrap_or("").trim().to_ascii_lowercase());
        let zstd = match encoding.as_deref() {
            None | Some("" | "identity") => None,
            Some("zstd") => {
                let mut decoder = Decoder::new().map_err(zstd_error)?;
                decoder
                    .set_parameter(DParameter::WindowLogMax(WINDOW_LOG_MAX))
                    .map_err(zstd_error)?;
                Some(ZstdBody {
                    decoder,
                    step: vec![0; STEP_BYTES],
                    frame_done: true,
                })
            }
            Some(other) => {
                return Err(AppError::UnsupportedMediaType(format!(
                    "the body's Content-Encoding {other:?} is not supported: send it \
                     uncompressed or with Content-Encoding: zstd"
                )))
            }
        };
        Ok(BodyDecoder {
            zstd,
            max_decoded: config.max_request_bytes,
            max_ratio: config.max_compression_ratio,
            compressed: 0,
            decoded: 0,
        })
    }

    /// Decodes one received `chunk`, handing the decoded bytes to `sink` in steps; stops at the
    /// first error, from the limits, the zstd stream or `sink`.
    pub fn decode(
        &mut self,
        chunk: &[u8],
        mut sink: impl FnMut(&[u8]) -> Result<(), AppError>,
    ) -> Result<(), AppError> {
        // Undecoded bodies are held to the request limit as they are received.
        let Some(zstd) = self.zstd.as_mut() else {
            return sink(chunk);
        };
        let mut input = InBuffer::around(chunk);
        loop {
            let before = input.pos();
            let mut output = OutBuffer::around(&mut zstd.step[..]);
            let hint = zstd
                .decoder
                .run(&mut input, &mut output)
                .map_err(zstd_error)?;
            let produced = output.pos();
            // A call with nothing to do answers the header size of a next frame, not 0.
            if input.pos() > before || produced > 0 {
                zstd.frame_done = hint == 0;
            }
            self.compressed += (input.pos() - before) as u64;
            self.decoded += produced as u64;
            if self.decoded > self.max_decoded {
                return Err(AppError::request_too_large(self.decoded, self.max_decoded));
            }
            let ratio_limited = self.max_ratio > 0 && self.decoded > RATIO_FREE_BYTES;
            if ratio_limited && self.decoded > self.max_ratio.saturating_mul(self.compressed) {
                return Err(AppError::PayloadTooLarge(format!(
                    "the zstd body decodes to more than {ratio} times its compressed size: the \
                     server's limit is a ratio of {ratio} (--max-compression-ratio) past the \
                     first {RATIO_FREE_BYTES} bytes; send such a body uncompressed. Nothing was \
                     stored",
                    ratio = self.max_ratio
                )));
            }
            if produced > 0 {
                sink(&zstd.step[..produced])?;
            }
            // A full step may leave decoded bytes inside the decoder even when all input is in.
            if input.pos() == chunk.len() && produced < zstd.step.len() {
                return Ok(());
            }
        }
    }

    /// Call when the body has ended: an error if a zstd frame stopped in the middle.
    pub fn finish(&self) -> Result<(), AppError> {
        match &self.zstd {
            Some(zstd) if !zstd.frame_done => Err(AppError::bad_request(
                "bad_body",
                "the zstd body ends in the middle of a frame; nothing was stored",
            )),
            _ => Ok(()),
        }
    }
}

fn zstd_error(err: std::io::Error) -> AppError {
    AppError::bad_request(
        "bad_body",
        format!(
            "the zstd body could not be decoded: {err} (the server decodes windows of up to \
             {} MiB: levels up to 19, without --ultra or --long); nothing was stored",
            1 << (WINDOW_LOG_MAX - 20)
        ),
    )
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, StatusCode};
    use axum::response::IntoResponse;

    use super::BodyDecoder;
    use crate::config::Config;
    use crate::error::AppError;

    fn zstd_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("content-encoding", HeaderValue::from_static("zstd"));
        headers
    }

    /// Decodes `body` fed in `chunk`-byte pieces; the decoded bytes or the error's status.
    fn decode(body: &[u8], chunk: usize, config: &Config) -> Result<Vec<u8>, StatusCode> {
        let status = |e: AppError| e.into_response().status();
        let mut decoder = BodyDecoder::for_request(&zstd_headers(), config).map_err(status)?;
        let mut plain = Vec::new();
        for piece in body.chunks(chunk) {
            decoder
                .decode(piece, |bytes| {
                    plain.extend_from_slice(bytes);
                    Ok(())
                })
                .map_err(status)?;
        }
        decoder.finish().map_err(status)?;
        Ok(plain)
    }

    /// Bytes that compress about four times, like bytecode.
    fn bytecode_like(len: usize) -> Vec<u8> {
        let mut state = 1u32;
        (0..len)
            .map(|i| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                if i % 4 == 0 {
                    (state >> 24) as u8
                } else {
                    (i % 7) as u8
                }
            })
            .collect()
    }

    #[test]
    fn zstd_bodies_decode_in_any_chunking_and_concatenated_frames_too() {
        let plain = bytecode_like(3 << 20);
        let mut body = zstd::encode_all(&plain[..1 << 20], 3).unwrap();
        body.extend(zstd::encode_all(&plain[1 << 20..], 3).unwrap());
        for chunk in [1, 777, 64 << 10, body.len()] {
            assert_eq!(decode(&body, chunk, &Config::default()).unwrap(), plain);
        }
    }

    #[test]
    fn a_bomb_is_413_past_the_ratio_and_the_ratio_can_be_lifted() {
        let body = zstd::encode_all(&vec![0u8; 64 << 20][..], 3).unwrap();
        let config = Config::default();
        assert_eq!(
            decode(&body, 4096, &config),
            Err(StatusCode::PAYLOAD_TOO_LARGE)
        );
        let unlimited = Config {
            max_compression_ratio: 0,
            ..Config::default()
        };
        assert_eq!(decode(&body, 4096, &unlimited).unwrap().len(), 64 << 20);
        let small = Config {
            max_request_bytes: 32 << 20,
            ..unlimited
        };
        assert_eq!(
            decode(&body, 4096, &small),
            Err(StatusCode::PAYLOAD_TOO_LARGE)
        );
    }

    #[test]
    fn truncated_bodies_and_huge_windows_are_400() {
        let plain = bytecode_like(1 << 20);
        let body = zstd::encode_all(&plain[..], 3).unwrap();
        let config = Config::default();
        assert_eq!(
            decode(&body[..body.len() - 10], 4096, &config),
            Err(StatusCode::BAD_REQUEST)
        );
        let mut encoder = zstd::stream::raw::Encoder::new(3).unwrap();
        encoder
            .set_parameter(zstd::stream::raw::CParameter::WindowLog(27))
            .unwrap();
        let mut wide = zstd::stream::Encoder::with_encoder(Vec::new(), encoder);
        std::io::Write::write_all(&mut wide, &plain).unwrap();
        let wide = wide.finish().unwrap();
        assert_eq!(decode(&wide, 4096, &config), Err(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn other_encodings_are_415() {
        let mut headers = HeaderMap::new();
        headers.insert("content-encoding", HeaderValue::from_static("gzip"));
        let refused = BodyDecoder::for_request(&headers, &Config::default()).err();
        assert_eq!(
            refused.map(|e| e.into_response().status()),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
    }
}
