/*
 * Entry points shared by every test guest.
 *
 *  _start        64-bit Linux boot protocol entry (the ELF e_entry): long mode,
 *                paging on, RSI -> boot_params ("zero page").
 *  pvh_start32   Xen PVH entry (ELF note XEN_ELFNOTE_PHYS32_ENTRY), which QEMU's
 *                -kernel uses: 32-bit protected mode, paging off, EBX -> hvm_start_info.
 *  ap_tramp_*    real-mode trampoline an application processor starts in after
 *                INIT/SIPI; the BSP copies it below 1 MiB (see smp.c).
 *
 * Every path switches to the guest's own GDT and identity-mapped page tables (the
 * first 4 GiB in 2 MiB pages, built statically below so no instruction is spent on
 * them), its own stack, and calls the C code: guest_main(cmdline) on the boot CPU,
 * ap_main() on the others.
 */

#define CODE32 0x08
#define CODE64 0x10
#define DATA   0x18

#define BOOT_STACK_SIZE 16384
#define AP_STACK_SIZE   4096
#define MAX_APS         8

    .section .text.entry, "ax"
    .code64
    .globl _start
_start:
    cli
    /* The command line: boot_params.cmd_line_ptr | ext_cmd_line_ptr << 32. */
    movl 0x228(%rsi), %eax
    movl 0xc8(%rsi), %edx
    shlq $32, %rdx
    orq  %rdx, %rax
    movq %rax, %rdi
    leaq boot_stack_top(%rip), %rsp
    lgdt gdt_ptr(%rip)
    leaq pml4(%rip), %rax
    movq %rax, %cr3
    /* Reload CS from the new GDT. */
    leaq common64(%rip), %rax
    pushq $CODE64
    pushq %rax
    lretq

/* Boot CPU in 64-bit mode with the guest's GDT and page tables; RDI = cmdline. */
common64:
    movl $DATA, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    movl %eax, %fs
    movl %eax, %gs
    leaq boot_stack_top(%rip), %rsp
    xorl %ebp, %ebp
    call guest_main
    jmp  halt_forever

    .code32
    .globl pvh_start32
pvh_start32:
    cli
    movl 24(%ebx), %edi            /* hvm_start_info.cmdline_paddr (low half) */
    lgdt gdt_ptr
    movl $DATA, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    movl $long64_bsp, %ebp
    jmp  enter_long_mode32

/* From flat 32-bit protected mode to 64-bit mode; jumps to EBP, keeps EDI. */
enter_long_mode32:
    movl %cr4, %eax
    orl  $0x20, %eax               /* CR4.PAE */
    movl %eax, %cr4
    movl $pml4, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx         /* IA32_EFER */
    rdmsr
    orl  $0x100, %eax              /* EFER.LME */
    wrmsr
    movl %cr0, %eax
    orl  $0x80000001, %eax         /* CR0.PG | CR0.PE */
    movl %eax, %cr0
    ljmp $CODE64, $long64_from32

    .code64
long64_from32:
    /* The upper halves of registers are undefined after the mode switch. */
    movl %ebp, %ebp
    movl %edi, %edi
    jmp  *%rbp

long64_bsp:
    jmp  common64

    .code32
ap_start32:
    movl $DATA, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    movl $long64_ap, %ebp
    jmp  enter_long_mode32

    .code64
long64_ap:
    movl $DATA, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    movl %eax, %fs
    movl %eax, %gs
    movl $1, %eax
    lock xaddl %eax, ap_stack_next(%rip)
    cmpl $MAX_APS, %eax
    jae  halt_forever
    incl %eax
    shll $12, %eax                 /* AP_STACK_SIZE */
    leaq ap_stacks(%rip), %rsp
    addq %rax, %rsp
    xorl %ebp, %ebp
    call ap_main
    /* fall through */

    .globl halt_forever
halt_forever:
    cli
1:  hlt
    jmp 1b

/* Real-mode AP trampoline: position independent, entered at CS:0 with CS = vector << 8. */
    .code16
    .globl ap_tramp_start, ap_tramp_end
ap_tramp_start:
    cli
    movw %cs, %ax
    movw %ax, %ds
    lgdtl (ap_tramp_gdtr - ap_tramp_start)
    movl %cr0, %eax
    orl  $1, %eax
    movl %eax, %cr0
    ljmpl $CODE32, $ap_start32
    .p2align 2
ap_tramp_gdtr:
    .word gdt_end - gdt - 1
    .long gdt
ap_tramp_end:

    .code64

/* Xen PVH entry note (ELF note type 18, XEN_ELFNOTE_PHYS32_ENTRY). */
    .section .note.Xen, "a"
    .p2align 2
    .long 4                        /* namesz */
    .long 4                        /* descsz */
    .long 18                       /* type */
    .asciz "Xen"
    .p2align 2
    .long pvh_start32
    .p2align 2

    .section .data
    .p2align 3
gdt:
    .quad 0
    .quad 0x00cf9b000000ffff       /* 0x08: flat 32-bit code */
    .quad 0x00af9b000000ffff       /* 0x10: 64-bit code */
    .quad 0x00cf93000000ffff       /* 0x18: flat data */
    .quad 0x00cff3000000ffff       /* 0x20: flat data, DPL 3 */
    .quad 0x00affb000000ffff       /* 0x28: 64-bit code, DPL 3 */
gdt_end:
    .p2align 3
gdt_ptr:
    .word gdt_end - gdt - 1
    .quad gdt

ap_stack_next:
    .long 0

/* Identity map of the first 4 GiB: PML4 -> PDPT -> 4 page directories of 2 MiB pages. */
    .p2align 12
pml4:
    .quad pdpt + 0x3
    .fill 511, 8, 0
pdpt:
    .quad pd + 0x3
    .quad pd + 0x1003
    .quad pd + 0x2003
    .quad pd + 0x3003
    .fill 508, 8, 0
pd:
    .set i, 0
    .rept 2048
    .quad (i << 21) | 0x83         /* present, writable, 2 MiB page */
    .set i, i + 1
    .endr

    .section .bss
    .p2align 12
boot_stack:
    .skip BOOT_STACK_SIZE
boot_stack_top:
ap_stacks:
    .skip AP_STACK_SIZE * (MAX_APS + 1)
