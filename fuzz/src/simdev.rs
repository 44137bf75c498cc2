//! The sim device's frames (`tsuba_protocols::simdev`): requests, read by tee-sim on the host,
//! and responses, read by the guest.

use tsuba_protocols::simdev::{
    HEADER_LEN, MAX_REQUEST_LEN, MAX_RESPONSE_LEN, body_id, decode_request, decode_response,
    encode_request, encode_response, parse_header,
};

use crate::split_selector;

/// Most frames one input may carry.
const MAX_FRAMES: usize = 16;

/// First byte: even, the rest is a stream of request frames; odd, of response frames. Each
/// frame is read as the device and its client do (`parse_header`, then the body it announces),
/// and each decoded body must encode and decode back equal.
pub(crate) fn simdev_frames(data: &[u8]) {
    let (selector, mut stream) = split_selector(data);
    let requests = selector % 2 == 0;
    let max = if requests {
        MAX_REQUEST_LEN
    } else {
        MAX_RESPONSE_LEN
    };
    for _ in 0..MAX_FRAMES {
        let Some((header, rest)) = stream.split_first_chunk::<HEADER_LEN>() else {
            return;
        };
        let Ok(len) = parse_header(header, max) else {
            return;
        };
        assert!(len <= max, "header length {len} above its bound {max}");
        let Some((body, rest)) = rest.split_at_checked(len) else {
            return;
        };
        stream = rest;
        let _ = body_id(body);
        if requests {
            if let Ok((id, request)) = decode_request(body) {
                let frame = encode_request(id, &request);
                let again = decode_request(unframe(&frame, max))
                    .unwrap_or_else(|e| panic!("an encoded request does not decode: {e}"));
                assert_eq!((id, request), again, "request changed across encode/decode");
            }
        } else if let Ok((id, response)) = decode_response(body) {
            let frame = encode_response(id, &response)
                .unwrap_or_else(|e| panic!("a decoded response does not encode: {e}"));
            let again = decode_response(unframe(&frame, max))
                .unwrap_or_else(|e| panic!("an encoded response does not decode: {e}"));
            assert_eq!(
                (id, response),
                again,
                "response changed across encode/decode"
            );
        }
    }
}

/// The body of a frame this crate encoded, after checking its header.
fn unframe(frame: &[u8], max: usize) -> &[u8] {
    let Some((header, body)) = frame.split_first_chunk::<HEADER_LEN>() else {
        panic!("an encoded frame is shorter than its header");
    };
    let len = parse_header(header, max)
        .unwrap_or_else(|e| panic!("an encoded frame has a bad header: {e}"));
    assert_eq!(
        len,
        body.len(),
        "an encoded frame's header disagrees with its body"
    );
    body
}
