//! A Multiboot (version 1) kernel: entered in 32-bit protected mode by the hypervisor's
//! Multiboot loader, it checks what the specification promises (EAX magic, CR0, EFLAGS,
//! flat segments, the information structure: memory sizes against the VM's memory,
//! the memory map, the command line and the two boot modules) and reports each check
//! as `CHECK <name> PASS|FAIL` on its serial port (COM1), then shuts down.
//!
//! Everything is 32-bit assembly: the kernel never leaves the mode it is entered in.
//! It is loaded through the header's address fields (flag 16), so its code, data and
//! header all sit in one section, in the order the file holds them. The expectations
//! match the `multiboot` VM of tests/tests/vms.rs:
//! `cmdline = "multiboot-test one=1 two"`, `modules = ["policy", "checks"]`.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod kernel {
    core::arch::global_asm!(
        r#"
.section .text._start, "ax"
.code32
.balign 4
mb_header:
    .long 0x1BADB002
    .long 0x00010003
    .long -(0x1BADB002 + 0x00010003)
    .long mb_header
    .long mb_header
    .long mb_load_end
    .long mb_bss_end
    .long _start

.global _start
_start:
    mov dword ptr [mb_saved_eax], eax
    mov dword ptr [mb_saved_ebx], ebx
    mov esp, offset mb_stack_top
    // VM_INFO: the VM's memory size, from the hypervisor directly.
    mov eax, 3
    mov ebx, offset mb_vm_info
    xor ecx, ecx
    vmmcall
    mov ebp, dword ptr [mb_vm_info + 8]
    mov ebx, dword ptr [mb_saved_ebx]

    cmp dword ptr [mb_saved_eax], 0x2BADB002
    sete al
    movzx eax, al
    mov esi, offset mb_n_magic
    call mb_report

    mov eax, cr0
    and eax, 0x80000001
    cmp eax, 1
    sete al
    movzx eax, al
    mov esi, offset mb_n_cr0
    call mb_report

    // IF (bit 9) and VM (bit 17) clear.
    pushfd
    pop eax
    test eax, 0x20200
    sete al
    movzx eax, al
    mov esi, offset mb_n_eflags
    call mb_report

    // CS base 0: the address call pushes is the linked one.
    call mb_here
mb_here:
    pop eax
    cmp eax, offset mb_here
    sete al
    movzx eax, al
    mov esi, offset mb_n_cs
    call mb_report

    // Every data segment reads the linked address's contents (base 0).
    xor ecx, ecx
    cmp dword ptr ds:[mb_probe], 0x5EC7F1A7
    setne cl
    cmp dword ptr es:[mb_probe], 0x5EC7F1A7
    setne dl
    or cl, dl
    cmp dword ptr fs:[mb_probe], 0x5EC7F1A7
    setne dl
    or cl, dl
    cmp dword ptr gs:[mb_probe], 0x5EC7F1A7
    setne dl
    or cl, dl
    cmp dword ptr ss:[mb_probe], 0x5EC7F1A7
    setne dl
    or cl, dl
    xor eax, eax
    test cl, cl
    sete al
    mov esi, offset mb_n_data
    call mb_report

    // mem_lower, cmdline, mods and mmap valid (flags bits 0, 2, 3, 6).
    mov eax, dword ptr [ebx]
    and eax, 0x4d
    cmp eax, 0x4d
    sete al
    movzx eax, al
    mov esi, offset mb_n_flags
    call mb_report

    // mem_lower: 1..=640 KiB.
    mov eax, dword ptr [ebx + 4]
    dec eax
    cmp eax, 640
    setb al
    movzx eax, al
    mov esi, offset mb_n_lower
    call mb_report

    // mem_upper: all of the VM's memory above 1 MiB.
    mov eax, dword ptr [ebx + 8]
    shl eax, 10
    add eax, 0x100000
    cmp eax, ebp
    sete al
    movzx eax, al
    mov esi, offset mb_n_upper
    call mb_report

    call mb_check_mmap
    mov esi, offset mb_n_mmap
    call mb_report

    // The command line, as configured.
    xor eax, eax
    mov esi, dword ptr [ebx + 16]
    cmp esi, ebp
    jae 2f
    mov edi, offset mb_expected_cmdline
    call mb_streq
2:
    mov esi, offset mb_n_cmdline
    call mb_report

    xor eax, eax
    cmp dword ptr [ebx + 20], 2
    jne 3f
    test dword ptr [ebx], 8
    setnz al
3:
    mov esi, offset mb_n_mods
    call mb_report

    // Module 0: the signed policy bundle (magic "BHPOLICY"), named "policy".
    mov edi, dword ptr [ebx + 24]
    mov esi, offset mb_s_policy
    mov edx, 0x00504842
    call mb_module_ok
    mov esi, offset mb_n_mod_policy
    call mb_report

    // Module 1: the checks payload, an ELF file, named "checks", after module 0.
    mov edi, dword ptr [ebx + 24]
    add edi, 16
    mov esi, offset mb_s_checks
    mov edx, 0x004c457f
    call mb_module_ok
    mov ecx, dword ptr [ebx + 24]
    mov ecx, dword ptr [ecx + 4]
    cmp dword ptr [edi], ecx
    jae 4f
    xor eax, eax
4:
    mov esi, offset mb_n_mod_checks
    call mb_report

    // CHECKS DONE passed=N failed=M, then SHUTDOWN.
    mov edi, offset mb_line
    mov edx, offset mb_s_done
    call mb_copy
    mov eax, dword ptr [mb_passed]
    call mb_dec
    mov edx, offset mb_s_failed
    call mb_copy
    mov eax, dword ptr [mb_failed]
    call mb_dec
    mov byte ptr [edi], 10
    inc edi
    call mb_write_line
    mov eax, 4
    xor ebx, ebx
    vmmcall
5:
    hlt
    jmp 5b

// EAX = 1 if the memory map covers RAM below mem_lower and from 1 MiB to the end of
// the VM's memory (EBP) with available entries, and no available entry runs past it.
mb_check_mmap:
    push ebx
    push esi
    push edi
    push ecx
    push edx
    mov eax, dword ptr [ebx + 4]
    shl eax, 10
    mov dword ptr [mb_lower_bytes], eax
    xor edx, edx
    mov esi, dword ptr [ebx + 48]
    mov ecx, dword ptr [ebx + 44]
    cmp ecx, 4096
    ja 8f
    add ecx, esi
6:
    cmp esi, ecx
    jae 9f
    cmp dword ptr [esi + 20], 1
    jne 7f
    mov eax, dword ptr [esi + 8]
    or eax, dword ptr [esi + 16]
    jnz 8f
    mov eax, dword ptr [esi + 4]
    mov edi, eax
    add edi, dword ptr [esi + 12]
    jc 8f
    cmp edi, ebp
    ja 8f
    // Lower memory: from 0 to at least mem_lower.
    test eax, eax
    jnz 22f
    cmp edi, dword ptr [mb_lower_bytes]
    jb 22f
    or edx, 1
22:
    // Upper memory: from 1 MiB (or below) to the end of RAM.
    cmp eax, 0x100000
    ja 7f
    cmp edi, ebp
    jne 7f
    or edx, 2
7:
    mov eax, dword ptr [esi]
    add eax, 4
    add esi, eax
    jmp 6b
8:
    or edx, 4
9:
    xor eax, eax
    cmp edx, 3
    sete al
    pop edx
    pop ecx
    pop edi
    pop esi
    pop ebx
    ret

// EAX = 1 if the module entry at EDI is page-aligned, above the kernel, inside RAM,
// starts with the 3 bytes in EDX and is named by the string at ESI.
mb_module_ok:
    push esi
    push edi
    push ecx
    xor eax, eax
    mov ecx, dword ptr [edi]
    test ecx, 0xfff
    jnz 23f
    cmp ecx, offset mb_bss_end
    jb 23f
    cmp dword ptr [edi + 4], ecx
    jbe 23f
    cmp dword ptr [edi + 4], ebp
    ja 23f
    mov ecx, dword ptr [ecx]
    and ecx, 0x00ffffff
    cmp ecx, edx
    jne 23f
    mov edi, dword ptr [edi + 8]
    cmp edi, ebp
    jae 23f
    call mb_streq
23:
    pop ecx
    pop edi
    pop esi
    ret

// EAX = 1 if the NUL-terminated strings at ESI and EDI are equal (at most 4096 bytes).
mb_streq:
    push esi
    push edi
    push edx
    push ecx
    mov ecx, 4096
12:
    mov dl, byte ptr [esi]
    cmp dl, byte ptr [edi]
    jne 13f
    test dl, dl
    jz 14f
    inc esi
    inc edi
    dec ecx
    jnz 12b
13:
    xor eax, eax
    jmp 15f
14:
    mov eax, 1
15:
    pop ecx
    pop edx
    pop edi
    pop esi
    ret

// Reports check ESI (name) as passed if EAX is 1.
mb_report:
    push eax
    push edx
    push edi
    mov edi, offset mb_line
    mov edx, offset mb_s_check
    call mb_copy
    mov edx, esi
    call mb_copy
    mov eax, dword ptr [esp + 8]
    cmp eax, 1
    jne 16f
    inc dword ptr [mb_passed]
    mov edx, offset mb_s_pass
    jmp 17f
16:
    inc dword ptr [mb_failed]
    mov edx, offset mb_s_fail
17:
    call mb_copy
    call mb_write_line
    pop edi
    pop edx
    pop eax
    ret

// Writes mb_line up to EDI to COM1 (0x3F8), each byte once the transmitter holding
// register is empty (LSR 0x3FD bit 5), as any kernel's early console does.
mb_write_line:
    push eax
    push edx
    push esi
    mov esi, offset mb_line
20:
    cmp esi, edi
    jae 22f
21:
    mov dx, 0x3FD
    in al, dx
    test al, 0x20
    jz 21b
    mov al, byte ptr [esi]
    mov dx, 0x3F8
    out dx, al
    inc esi
    jmp 20b
22:
    pop esi
    pop edx
    pop eax
    ret

// Copies the NUL-terminated string at EDX to EDI (advanced past it).
mb_copy:
    push eax
    push edx
18:
    mov al, byte ptr [edx]
    test al, al
    jz 19f
    mov byte ptr [edi], al
    inc edx
    inc edi
    jmp 18b
19:
    pop edx
    pop eax
    ret

// Writes EAX in decimal at EDI (advanced past it).
mb_dec:
    push ebx
    push ecx
    push edx
    mov ebx, 10
    xor ecx, ecx
20:
    xor edx, edx
    div ebx
    push edx
    inc ecx
    test eax, eax
    jnz 20b
21:
    pop eax
    add al, 48
    mov byte ptr [edi], al
    inc edi
    dec ecx
    jnz 21b
    pop edx
    pop ecx
    pop ebx
    ret

.balign 4
mb_probe: .long 0x5EC7F1A7
mb_saved_eax: .long 0
mb_saved_ebx: .long 0
mb_passed: .long 0
mb_failed: .long 0
mb_lower_bytes: .long 0
mb_vm_info: .skip 48
mb_line: .skip 512
mb_s_check: .asciz "CHECK "
mb_s_pass: .asciz " PASS\n"
mb_s_fail: .asciz " FAIL (multiboot kernel saw another value)\n"
mb_s_done: .asciz "CHECKS DONE passed="
mb_s_failed: .asciz " failed="
mb_s_policy: .asciz "policy"
mb_s_checks: .asciz "checks"
mb_expected_cmdline: .asciz "multiboot-test one=1 two"
mb_n_magic: .asciz "multiboot_eax_magic"
mb_n_cr0: .asciz "multiboot_cr0_protected_no_paging"
mb_n_eflags: .asciz "multiboot_eflags_if_vm_clear"
mb_n_cs: .asciz "multiboot_cs_flat"
mb_n_data: .asciz "multiboot_data_segments_flat"
mb_n_flags: .asciz "multiboot_info_flags"
mb_n_lower: .asciz "multiboot_mem_lower"
mb_n_upper: .asciz "multiboot_mem_upper_matches_vm"
mb_n_mmap: .asciz "multiboot_mmap_covers_memory"
mb_n_cmdline: .asciz "multiboot_cmdline"
mb_n_mods: .asciz "multiboot_module_count"
mb_n_mod_policy: .asciz "multiboot_module_policy"
mb_n_mod_checks: .asciz "multiboot_module_checks"
.balign 16
mb_load_end:
    .skip 4096
mb_stack_top:
mb_bss_end:
.code64
"#
    );

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
        loop {
            core::hint::spin_loop();
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("This is a Multiboot guest kernel; it runs inside a Bulkhead VM (see tests/).");
}
