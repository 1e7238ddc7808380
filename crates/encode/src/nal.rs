//! Annex-B byte-stream helpers.

/// `nal_unit_type` of a non-IDR slice.
pub const NAL_SLICE: u8 = 1;
/// `nal_unit_type` of an IDR slice.
pub const NAL_IDR: u8 = 5;
/// `nal_unit_type` of supplemental enhancement information.
pub const NAL_SEI: u8 = 6;
/// `nal_unit_type` of a sequence parameter set.
pub const NAL_SPS: u8 = 7;
/// `nal_unit_type` of a picture parameter set.
pub const NAL_PPS: u8 = 8;

/// Splits an Annex-B byte stream into NAL units (without their start codes).
///
/// Accepts 3-byte (`00 00 01`) and 4-byte (`00 00 00 01`) start codes, mixed freely. Bytes
/// before the first start code are ignored, as are empty NAL units; trailing zero bytes of a
/// unit (the extra zero of a following 4-byte start code, `trailing_zero_8bits`) are removed.
/// A buffer without any start code yields nothing. Never panics.
pub fn split_nals(annexb: &[u8]) -> impl Iterator<Item = &[u8]> {
    NalIter {
        data: annexb,
        next: find_start_code(annexb, 0).map(|(_, payload)| payload),
    }
}

/// `nal_unit_type` (the low 5 bits of the first byte) of a NAL unit without start code;
/// 0 ("unspecified") for an empty slice.
pub fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| b & 0x1f)
}

struct NalIter<'a> {
    data: &'a [u8],
    /// Offset of the next unit's first byte (just after its start code).
    next: Option<usize>,
}

impl<'a> Iterator for NalIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            let start = self.next?;
            let (end, following) = match find_start_code(self.data, start) {
                Some((sc, payload)) => (sc, Some(payload)),
                None => (self.data.len(), None),
            };
            self.next = following;
            let mut unit = &self.data[start..end];
            while let [rest @ .., 0] = unit {
                unit = rest;
            }
            if !unit.is_empty() {
                return Some(unit);
            }
        }
    }
}

/// Finds the first `00 00 01` at or after `from`: returns (offset of its first zero, offset just
/// after the `01`).
fn find_start_code(data: &[u8], from: usize) -> Option<(usize, usize)> {
    let tail = data.get(from..)?;
    tail.windows(3)
        .position(|w| w == [0, 0, 1])
        .map(|i| (from + i, from + i + 3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_mixed_start_codes() {
        let data = [
            0, 0, 0, 1, 0x67, 1, 2, // SPS, 4-byte start code
            0, 0, 1, 0x68, 3, // PPS, 3-byte start code
            0, 0, 0, 1, 0x65, 4, 5, 6, // IDR
        ];
        let nals: Vec<&[u8]> = split_nals(&data).collect();
        assert_eq!(
            nals,
            vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4, 5, 6][..]]
        );
        let types: Vec<u8> = nals.iter().map(|n| nal_type(n)).collect();
        assert_eq!(types, vec![NAL_SPS, NAL_PPS, NAL_IDR]);
    }

    #[test]
    fn tolerates_garbage_and_edge_cases() {
        assert_eq!(split_nals(&[]).count(), 0);
        assert_eq!(split_nals(&[1, 2, 3]).count(), 0);
        assert_eq!(split_nals(&[0, 0, 1]).count(), 0);
        assert_eq!(split_nals(&[0, 0, 0, 1, 0, 0, 1]).count(), 0);
        let v: Vec<&[u8]> = split_nals(&[9, 9, 0, 0, 1, 0x41, 0, 0, 0]).collect();
        assert_eq!(v, vec![&[0x41][..]]);
        let v: Vec<&[u8]> = split_nals(&[0, 0, 1, 0x41, 0, 0]).collect();
        assert_eq!(v, vec![&[0x41][..]]);
        assert_eq!(nal_type(&[]), 0);
        assert_eq!(nal_type(&[0x65]), 5);
    }
}
