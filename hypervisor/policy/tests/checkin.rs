//! The check-in request's encoding bounds.

use bulkhead_policy::device::MAX_GROUP;
use bulkhead_policy::heartbeat::{CheckinRequest, MAX_REQUEST};

fn request(group: &str) -> CheckinRequest {
    CheckinRequest { device_id: [7; 16], group: group.into(), running_version: u64::MAX, nonce: [9; 16] }
}

#[test]
fn a_request_round_trips_even_at_its_largest() {
    let largest = request(&"g".repeat(MAX_GROUP));
    let bytes = largest.encode().expect("the largest request fits MAX_REQUEST");
    assert!(bytes.len() <= MAX_REQUEST);
    assert_eq!(CheckinRequest::decode(&bytes), Some(largest));
}

#[test]
fn trailing_bytes_long_groups_and_truncation_are_refused() {
    let mut bytes = request("staff").encode().unwrap();
    assert!(CheckinRequest::decode(&bytes[..bytes.len() - 1]).is_none());
    bytes.push(0);
    assert!(CheckinRequest::decode(&bytes).is_none());
    let long = postcard::to_allocvec(&request(&"g".repeat(MAX_GROUP + 1))).unwrap();
    assert!(CheckinRequest::decode(&long).is_none());
    assert!(request(&"g".repeat(MAX_GROUP + 1)).encode().is_none_or(|b| CheckinRequest::decode(&b).is_none()));
}
