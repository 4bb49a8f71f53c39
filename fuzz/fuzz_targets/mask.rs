//! The output masker (`zopp run --mask`) on arbitrary secret values and output: nothing may
//! panic, masking a stream in arbitrary chunks gives the same bytes as masking it at once, and
//! no value long enough to be masked appears in the output.

#![no_main]

use libfuzzer_sys::fuzz_target;
use zopp_formats::Masker;

fuzz_target!(|data: &[u8]| {
    // Layout: n (number of values, ≤ 8), then n length-prefixed values, then chunk sizes seed,
    // then the output stream.
    let Some((&n, mut rest)) = data.split_first() else {
        return;
    };
    let mut values = Vec::new();
    for _ in 0..(n % 9) {
        let Some((&len, r)) = rest.split_first() else {
            return;
        };
        let len = usize::from(len % 24).min(r.len());
        values.push(r[..len].to_vec());
        rest = &r[len..];
    }
    let Some((&step, stream)) = rest.split_first() else {
        return;
    };
    let masker = Masker::new(&values);
    let whole = masker.mask(stream);

    let mut streaming = masker.fresh();
    let mut chunked = Vec::new();
    let step = usize::from(step % 7) + 1;
    for chunk in stream.chunks(step) {
        chunked.extend_from_slice(&streaming.push(chunk));
    }
    chunked.extend_from_slice(&streaming.finish());
    assert_eq!(
        whole, chunked,
        "chunked masking differs from masking at once"
    );

    // A value sharing no byte with the replacement text cannot reappear next to or inside one,
    // so any occurrence in the output would be one the masker missed.
    let marker = zopp_formats::mask::REPLACEMENT.as_bytes();
    for v in values
        .iter()
        .filter(|v| v.len() >= zopp_formats::mask::MIN_MASKED_LEN)
        .filter(|v| !v.iter().any(|b| marker.contains(b)))
    {
        assert!(
            !whole.windows(v.len()).any(|w| w == v.as_slice()),
            "a value survived masking"
        );
    }
});
