//! A stand-in for the boot path's policy verification, for images that carry a signed
//! bundle as boot module [`MODULE`]: it is verified as an enrolment (a fresh laptop
//! trusting what its stick brings, as at first boot) and installed as the running
//! policy, so that check-ins work end to end before the boot path reads the policy and
//! the laptop's state from UEFI variables. That boot path replaces this module.
#![forbid(unsafe_code)]

use bulkhead_abi::BootInfo;
use bulkhead_policy::DeviceState;

use crate::host::handoff;

/// The boot module's name.
pub const MODULE: &str = "policy-enrol";

/// Installs the bundle in boot module [`MODULE`], if there is one and it verifies, at
/// host time `now` (Unix seconds).
pub fn install_from_boot_module(info: &BootInfo, now: u64) {
    let Some(bytes) = handoff::module_data(handoff::modules(info), MODULE) else { return };
    let state = DeviceState { device_id: super::nonce::fresh(), ..DeviceState::default() };
    match bulkhead_policy::device::verify(bytes, &state, now) {
        Ok(accepted) => {
            log::info!(
                target: "policy",
                "enrolled from boot module {MODULE}: device {}",
                bulkhead_policy::device::device_id_hex(&accepted.state.device_id)
            );
            super::runtime::install(accepted.policy, accepted.state);
        }
        Err(refusal) => log::error!(target: "policy", "boot module {MODULE} refused: {refusal}"),
    }
}
