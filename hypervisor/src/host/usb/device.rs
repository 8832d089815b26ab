//! One USB device on a running controller: Enable Slot, Address Device (xHCI §4.3),
//! control transfers on endpoint 0, Configure Endpoint for two bulk endpoints (§4.6.6),
//! bulk transfers through the bounce buffer, and the recovery of a halted or stuck
//! endpoint (Reset/Stop Endpoint, Set TR Dequeue Pointer, §4.6.8–4.6.10).
#![forbid(unsafe_code)]

use alloc::boxed::Box;
use alloc::vec::Vec;

use xhci::context::{EndpointType, Input, InputHandler};
use xhci::ring::trb::command;
use xhci::ring::trb::event::Allowed;
use xhci::ring::trb::transfer::{DataStage, Direction, Normal, SetupStage, StatusStage, TransferType};

use super::controller::{
    BOUNCE, BOUNCE_BYTES, BULK_IN_RING, BULK_OUT_RING, CODE_SHORT, CODE_SUCCESS, CONTROL_BUFFER, CONTROL_BUFFER_BYTES,
    DEVICE_CONTEXT, EP0_RING, INPUT_CONTEXT, UsbError, Xhci, XhciHw,
};
use super::descriptors::BulkEndpoint;
use super::ring::ProducerRing;

/// A control request's data stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlData {
    None,
    /// Read up to this many bytes into the control buffer.
    In(u16),
}

/// The addressed device and its rings.
#[derive(Debug)]
pub struct UsbDevice<H: XhciHw> {
    pub(super) xhci: Xhci<H>,
    slot: u8,
    port: u8,
    speed: u8,
    ep0: ProducerRing,
    bulk_in: Option<(BulkEndpoint, ProducerRing)>,
    bulk_out: Option<(BulkEndpoint, ProducerRing)>,
}

/// A bulk endpoint of the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bulk {
    In,
    Out,
}

fn input_context(ctx64: bool) -> Box<dyn InputHandler> {
    if ctx64 { Box::new(Input::new_64byte()) } else { Box::new(Input::new_32byte()) }
}

/// The input context's bytes: the input control context, the slot context, then the
/// 31 endpoint contexts (§6.2.5).
fn context_bytes(input: &dyn InputHandler) -> Vec<u8> {
    let mut dwords: Vec<u32> = Vec::new();
    dwords.extend_from_slice(input.control().as_ref());
    dwords.extend_from_slice(input.device().slot().as_ref());
    for dci in 1..=31 {
        dwords.extend_from_slice(input.device().endpoint(dci).as_ref());
    }
    dwords.iter().flat_map(|d| d.to_le_bytes()).collect()
}

/// The default control max packet size for a port speed before the device descriptor
/// is read (USB 2.0 §5.5.3, USB 3.2 §9.6.1).
pub fn default_max_packet0(speed: u8) -> u16 {
    match speed {
        2 => 8,
        1 | 3 => 64,
        _ => 512,
    }
}

impl<H: XhciHw> UsbDevice<H> {
    /// Enables a slot for the device on `port` (reset, at `speed`) and addresses it
    /// with control max packet size `max_packet0`.
    pub fn address(mut xhci: Xhci<H>, port: u8, speed: u8, max_packet0: u16) -> Result<Self, (Xhci<H>, UsbError)> {
        let slot = match xhci.command(command::EnableSlot::new().into_raw()) {
            Ok(slot) if slot >= 1 => slot,
            Ok(_) => return Err((xhci, UsbError::Device("Enable Slot returned slot 0"))),
            Err(e) => return Err((xhci, e)),
        };
        let mut dev = UsbDevice { xhci, slot, port, speed, ep0: ProducerRing::new(0), bulk_in: None, bulk_out: None };
        dev.ep0 = ProducerRing::new(dev.xhci.dma.wrapping_add(EP0_RING));
        if let Err(e) = dev.address_device(max_packet0) {
            return Err((dev.xhci, e));
        }
        Ok(dev)
    }

    fn fill_slot(&self, input: &mut dyn InputHandler, entries: u8) {
        let slot = input.device_mut().slot_mut();
        slot.set_route_string(0);
        slot.set_speed(self.speed & 0xf);
        slot.set_context_entries(entries & 0x1f);
        slot.set_root_hub_port_number(self.port);
    }

    fn write_input(&mut self, input: &dyn InputHandler) -> Result<u64, UsbError> {
        let bytes = context_bytes(input);
        self.xhci.dma_write(INPUT_CONTEXT, &bytes)?;
        Ok(self.xhci.dma.wrapping_add(INPUT_CONTEXT))
    }

    fn address_device(&mut self, max_packet0: u16) -> Result<(), UsbError> {
        let zero = [0u8; 4096];
        self.xhci.dma_write(DEVICE_CONTEXT, &zero)?;
        let slot_entry = u64::from(self.slot).wrapping_mul(8).wrapping_add(super::controller::DCBAA);
        let device_context = self.xhci.dma.wrapping_add(DEVICE_CONTEXT);
        self.xhci.dma_write(slot_entry, &device_context.to_le_bytes())?;
        self.xhci.dma_write(EP0_RING, &zero)?;
        let mut input = input_context(self.xhci.cap.context_64);
        input.control_mut().set_add_context_flag(0);
        input.control_mut().set_add_context_flag(1);
        self.fill_slot(&mut *input, 1);
        let ep0 = input.device_mut().endpoint_mut(1);
        ep0.set_endpoint_type(EndpointType::Control);
        ep0.set_max_packet_size(max_packet0);
        ep0.set_error_count(3);
        ep0.set_tr_dequeue_pointer(self.ep0.base());
        ep0.set_dequeue_cycle_state();
        ep0.set_average_trb_length(8);
        let ptr = self.write_input(&*input)?;
        let mut trb = command::AddressDevice::new();
        trb.set_input_context_pointer(ptr).set_slot_id(self.slot);
        self.xhci.command(trb.into_raw()).map(|_| ())
    }

    /// Configures the two bulk endpoints on the controller side (Configure Endpoint).
    pub fn configure_bulk(&mut self, bulk_in: BulkEndpoint, bulk_out: BulkEndpoint) -> Result<(), UsbError> {
        let (din, dout) = (bulk_in.dci(), bulk_out.dci());
        if !(2..=31).contains(&din) || !(2..=31).contains(&dout) || din == dout {
            return Err(UsbError::Device("bulk endpoints with unusable numbers"));
        }
        let zero = [0u8; 4096];
        self.xhci.dma_write(BULK_IN_RING, &zero)?;
        self.xhci.dma_write(BULK_OUT_RING, &zero)?;
        let in_ring = ProducerRing::new(self.xhci.dma.wrapping_add(BULK_IN_RING));
        let out_ring = ProducerRing::new(self.xhci.dma.wrapping_add(BULK_OUT_RING));
        let mut input = input_context(self.xhci.cap.context_64);
        input.control_mut().set_add_context_flag(0);
        input.control_mut().set_add_context_flag(usize::from(din));
        input.control_mut().set_add_context_flag(usize::from(dout));
        self.fill_slot(&mut *input, din.max(dout));
        for (dci, ep, ring, kind) in
            [(din, bulk_in, in_ring, EndpointType::BulkIn), (dout, bulk_out, out_ring, EndpointType::BulkOut)]
        {
            let ctx = input.device_mut().endpoint_mut(usize::from(dci));
            ctx.set_endpoint_type(kind);
            ctx.set_max_packet_size(ep.max_packet);
            ctx.set_max_burst_size(0);
            ctx.set_error_count(3);
            ctx.set_tr_dequeue_pointer(ring.base());
            ctx.set_dequeue_cycle_state();
            ctx.set_average_trb_length(3072);
        }
        let ptr = self.write_input(&*input)?;
        let mut trb = command::ConfigureEndpoint::new();
        trb.set_input_context_pointer(ptr).set_slot_id(self.slot);
        self.xhci.command(trb.into_raw())?;
        self.bulk_in = Some((bulk_in, in_ring));
        self.bulk_out = Some((bulk_out, out_ring));
        Ok(())
    }

    /// A control transfer on endpoint 0; returns the bytes of the data stage (read
    /// into the control buffer).
    pub fn control(
        &mut self,
        request_type: u8,
        request: u8,
        value: u16,
        index: u16,
        data: ControlData,
    ) -> Result<usize, UsbError> {
        let length = match data {
            ControlData::None => 0,
            ControlData::In(n) => n.min(CONTROL_BUFFER_BYTES as u16),
        };
        let mut setup = SetupStage::new();
        setup.set_request_type(request_type).set_request(request).set_value(value).set_index(index).set_length(length);
        setup.set_transfer_type(if length > 0 { TransferType::In } else { TransferType::No });
        let mut ring = self.ep0;
        self.xhci.enqueue(&mut ring, setup.into_raw())?;
        let mut data_at = None;
        if length > 0 {
            let mut stage = DataStage::new();
            stage
                .set_data_buffer_pointer(self.xhci.dma.wrapping_add(CONTROL_BUFFER))
                .set_trb_transfer_length(u32::from(length))
                .set_direction(Direction::In)
                .set_interrupt_on_short_packet();
            data_at = Some(self.xhci.enqueue(&mut ring, stage.into_raw())?);
        }
        let mut status = StatusStage::new();
        status.set_interrupt_on_completion();
        if length == 0 {
            status.set_direction();
        }
        let status_at = self.xhci.enqueue(&mut ring, status.into_raw())?;
        self.ep0 = ring;
        self.xhci.ring_doorbell(self.slot, 1);
        let mut got = usize::from(length);
        let slot = self.slot;
        let timeout = self.xhci.timing.command_us;
        loop {
            let event = self.xhci.wait_event(timeout, |e| match e {
                Allowed::TransferEvent(t) if t.slot_id() == slot && t.endpoint_id() == 1 => {
                    let code = match t.completion_code() {
                        Ok(c) => c as u8,
                        Err(raw) => raw,
                    };
                    Some((t.trb_pointer(), code, t.trb_transfer_length()))
                }
                _ => None,
            })?;
            let Some((at, code, residue)) = event else {
                self.recover(1, None)?;
                return Err(UsbError::TransferTimeout);
            };
            if Some(at) == data_at && code == CODE_SHORT {
                got = usize::from(length).saturating_sub(residue as usize);
                continue;
            }
            if code != CODE_SUCCESS {
                self.recover(1, Some(code))?;
                return Err(UsbError::Transfer(code));
            }
            if at == status_at {
                return Ok(got);
            }
        }
    }

    /// Reads the control buffer after a control transfer.
    pub fn control_data(&mut self, buf: &mut [u8]) -> Result<(), UsbError> {
        self.xhci.dma_read(CONTROL_BUFFER, buf)
    }

    fn bulk_ring(&self, which: Bulk) -> Option<(BulkEndpoint, ProducerRing)> {
        match which {
            Bulk::In => self.bulk_in,
            Bulk::Out => self.bulk_out,
        }
    }

    fn set_bulk_ring(&mut self, which: Bulk, ring: ProducerRing) {
        let slot = match which {
            Bulk::In => &mut self.bulk_in,
            Bulk::Out => &mut self.bulk_out,
        };
        if let Some((_, r)) = slot {
            *r = ring;
        }
    }

    pub fn endpoint_address(&self, which: Bulk) -> u8 {
        self.bulk_ring(which).map(|(ep, _)| ep.address).unwrap_or(0)
    }

    /// One bulk transfer of `len` bytes at `offset` of the DMA region (the bounce buffer
    /// or a small buffer); returns the bytes moved. A stall is returned as
    /// `Transfer(6)` with the endpoint reset on the controller side (the device's halt
    /// is the caller's to clear); a timeout stops the endpoint and skips the TRB.
    pub fn bulk(&mut self, which: Bulk, offset: u64, len: u32) -> Result<usize, UsbError> {
        let Some((ep, mut ring)) = self.bulk_ring(which) else {
            return Err(UsbError::Device("bulk endpoints not configured"));
        };
        if len == 0 || u64::from(len) > BOUNCE_BYTES || (offset == BOUNCE && u64::from(len) > BOUNCE_BYTES) {
            return Err(UsbError::Dma);
        }
        let mut trb = Normal::new();
        trb.set_data_buffer_pointer(self.xhci.dma.wrapping_add(offset))
            .set_trb_transfer_length(len)
            .set_interrupt_on_short_packet()
            .set_interrupt_on_completion();
        let at = self.xhci.enqueue(&mut ring, trb.into_raw())?;
        self.set_bulk_ring(which, ring);
        let dci = ep.dci();
        self.xhci.ring_doorbell(self.slot, dci);
        let slot = self.slot;
        let timeout = self.xhci.timing.command_us;
        let event = self.xhci.wait_event(timeout, |e| match e {
            Allowed::TransferEvent(t) if t.slot_id() == slot && t.trb_pointer() == at => {
                let code = match t.completion_code() {
                    Ok(c) => c as u8,
                    Err(raw) => raw,
                };
                Some((code, t.trb_transfer_length()))
            }
            _ => None,
        })?;
        match event {
            Some((CODE_SUCCESS | CODE_SHORT, residue)) => Ok(len.saturating_sub(residue) as usize),
            Some((code, _)) => {
                self.recover(dci, Some(code))?;
                Err(UsbError::Transfer(code))
            }
            None => {
                self.recover(dci, None)?;
                Err(UsbError::TransferTimeout)
            }
        }
    }

    /// Brings endpoint `dci` back to a usable state after a failed (`Some(code)`,
    /// endpoint halted) or timed-out (`None`, TRB still pending) transfer: Reset or
    /// Stop Endpoint, then Set TR Dequeue Pointer to the ring's enqueue position so the
    /// failed TRB is never run again.
    fn recover(&mut self, dci: u8, code: Option<u8>) -> Result<(), UsbError> {
        let slot = self.slot;
        let result = match code {
            Some(_) => {
                let mut trb = command::ResetEndpoint::new();
                trb.set_endpoint_id(dci).set_slot_id(slot);
                self.xhci.command(trb.into_raw())
            }
            None => {
                let mut trb = command::StopEndpoint::new();
                trb.set_endpoint_id(dci).set_slot_id(slot);
                self.xhci.command(trb.into_raw())
            }
        };
        // A stall on endpoint 0 halts it only until the next setup (USB 2.0 §8.5.3.4),
        // but the xHC still wants the reset; "context state error" means it is
        // already stopped.
        if let Err(e) = result
            && !matches!(e, UsbError::Command { code: 19, .. })
        {
            self.xhci.failed = true;
            return Err(e);
        }
        let ring = match dci {
            1 => self.ep0,
            _ => match self.bulk_in.iter().chain(self.bulk_out.iter()).find(|(ep, _)| ep.dci() == dci) {
                Some((_, ring)) => *ring,
                None => return Err(UsbError::Dma),
            },
        };
        let (pointer, cycle) = ring.enqueue_pointer();
        let mut trb = command::SetTrDequeuePointer::new();
        trb.set_new_tr_dequeue_pointer(pointer).set_endpoint_id(dci).set_slot_id(slot);
        if cycle {
            trb.set_dequeue_cycle_state();
        }
        self.xhci.command(trb.into_raw()).map(|_| ()).inspect_err(|_| self.xhci.failed = true)
    }

    pub fn failed(&self) -> bool {
        self.xhci.failed
    }

    pub fn slot(&self) -> u8 {
        self.slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_contexts_have_the_layout_of_section_6_2_5() {
        for (ctx64, size) in [(false, 32usize), (true, 64)] {
            let mut input = input_context(ctx64);
            input.control_mut().set_add_context_flag(0);
            input.control_mut().set_add_context_flag(1);
            input.device_mut().slot_mut().set_root_hub_port_number(5);
            input.device_mut().slot_mut().set_context_entries(1);
            let ep = input.device_mut().endpoint_mut(1);
            ep.set_max_packet_size(64);
            ep.set_tr_dequeue_pointer(0x1234_5000);
            ep.set_dequeue_cycle_state();
            let bytes = context_bytes(&*input);
            assert_eq!(bytes.len(), 33 * size);
            // Input control: add flags A0 and A1 in dword 1.
            assert_eq!(&bytes[4..8], &[0b11, 0, 0, 0]);
            // Slot context: context entries in dword 0 bits 31:27, port in dword 1 bits 23:16.
            let slot = &bytes[size..2 * size];
            assert_eq!(slot[3] >> 3, 1);
            assert_eq!(slot[6], 5);
            // EP0 context (DCI 1): max packet in dword 1 bits 31:16; TR dequeue | DCS.
            let ep0 = &bytes[2 * size..3 * size];
            assert_eq!(u16::from_le_bytes([ep0[6], ep0[7]]), 64);
            assert_eq!(u32::from_le_bytes([ep0[8], ep0[9], ep0[10], ep0[11]]), 0x1234_5001);
        }
    }

    #[test]
    fn default_packet_sizes_follow_the_speed() {
        assert_eq!([1, 2, 3, 4, 5].map(default_max_packet0), [64, 8, 64, 512, 512]);
    }
}
