//! Where the running policy comes from: the boot module `policy`, a signed bundle.
//! This is the one place that turns the module's bytes into a [`Policy`]; everything
//! after it (`Config::from_policy`) only sees the decoded model.
//!
//! For now it decodes the bundle (format, canonical encoding) and does not yet check
//! the signature against the laptop's enrolled key or its remembered state; that
//! verification belongs here, behind the same signature.
#![forbid(unsafe_code)]

use bulkhead_policy::{Bundle, Policy};

/// Why the policy module is refused (in words through `Display`).
pub type PolicyError = bulkhead_policy::Refusal;

/// The policy the boot module `bytes` carries.
pub fn policy_from_module(bytes: &[u8]) -> Result<Policy, PolicyError> {
    Bundle::decode(bytes).and_then(|bundle| bundle.policy()).map_err(PolicyError::Format)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use bulkhead_policy::bundle::FormatError;

    #[test]
    fn text_and_damaged_bundles_are_refused_in_words() {
        let old_text = b"vm corporate kind=linux image=linux memory=384M\n";
        let e = policy_from_module(old_text).unwrap_err();
        assert_eq!(e, PolicyError::Format(FormatError::NotABundle));
        assert_eq!(e.to_string(), "the policy file is not a Bulkhead policy bundle (damaged?)");
        assert!(policy_from_module(&[]).is_err());
    }
}
