//! A record's payload as the engine hands it to the log: the encoded bytes, then a job's
//! body kept apart (see the module docs of [`super`]).

use bytes::Bytes;

/// A record's payload in two parts, which the log writes one after the other: `head`, the
/// encoded fields, and `body`, a put's or image's body (empty for other kinds) shared with
/// the job it belongs to rather than copied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Payload {
    /// Every byte of the payload before the body.
    pub head: Vec<u8>,
    /// The rest of the payload: the job's body.
    pub body: Bytes,
}

impl Payload {
    /// The payload's length: both parts.
    pub fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }

    /// Whether the payload has no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payload in one piece (a copy of the body).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        out.extend_from_slice(&self.head);
        out.extend_from_slice(&self.body);
        out
    }
}

impl From<Vec<u8>> for Payload {
    /// A payload of encoded bytes only.
    fn from(head: Vec<u8>) -> Payload {
        Payload {
            head,
            body: Bytes::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::tests::change;
    use super::super::{body_in, encode, encode_payload, image_body_offset, put_body_offset};
    use super::*;
    use crate::engine::change::{Change, ImageState};
    use crate::engine::job::JobCounters;
    use crate::engine::time::Timestamp;
    use crate::protocol::{JobId, TubeName};

    proptest! {
        #[test]
        fn a_payload_in_parts_is_the_payload_whole_with_the_body_last(c in change()) {
            let (kind, whole) = encode(&c);
            let (split_kind, payload) = encode_payload(&c);
            prop_assert_eq!(split_kind, kind);
            prop_assert_eq!(payload.len(), whole.len());
            prop_assert_eq!(payload.to_vec(), whole);
            match body_in(&c) {
                Some((start, body)) => {
                    prop_assert_eq!(payload.head.len(), start);
                    prop_assert_eq!(&payload.body, body);
                }
                None => {
                    prop_assert!(payload.body.is_empty());
                }
            }
        }
    }

    /// Records are encoded under the engine's lock: a put of a large body must encode
    /// only its fields and tube name, and hand the body over as the very bytes the job
    /// holds, so the work under the lock does not grow with the body.
    #[test]
    fn encoding_a_large_put_or_image_copies_only_its_fields() {
        let tube = TubeName::new(&[b'q'; 200]).expect("valid");
        let body = Bytes::from(vec![7u8; 1 << 20]);
        let put = Change::Put {
            id: JobId(9),
            tube: tube.clone(),
            pri: 1,
            delay: 0,
            ttr: 5,
            created_at: Timestamp(1),
            ready_at: None,
            body: body.clone(),
        };
        let image = Change::Image {
            id: JobId(9),
            tube,
            pri: 1,
            delay: 0,
            ttr: 5,
            created_at: Timestamp(1),
            state: ImageState::Ready,
            counters: JobCounters::default(),
            body: body.clone(),
        };
        for (change, fixed) in [(put, put_body_offset(200)), (image, image_body_offset(200))] {
            let (_, payload) = encode_payload(&change);
            assert_eq!(payload.head.len(), fixed);
            assert!(payload.head.capacity() < 512, "{}", payload.head.capacity());
            assert_eq!(payload.body.as_ptr(), body.as_ptr(), "the body was copied");
            assert_eq!(payload.len(), fixed + (1 << 20));
        }
    }
}
