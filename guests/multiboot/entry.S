/*
 * Multiboot v1 header and 32-bit entry of the Multiboot test kernels.
 *
 * Built two ways (see crates/test-guests/src/multiboot.rs):
 *   default              flags 0x3 (page-aligned modules, memory information):
 *                        the loader places the kernel by its ELF program headers.
 *   -DMB_ADDRESS_FIELDS  flags 0x10003: the header's address fields say where
 *                        the image goes (the "a.out kludge"), ELF headers unused.
 *
 * At entry (Multiboot 0.6.96, 3.2): protected mode, paging off, flat segments,
 * EAX = 0x2BADB002, EBX = the information structure; no stack, and the GDT may
 * be invalid, so no segment register is reloaded here.
 */

#define MB_MAGIC 0x1BADB002
#ifdef MB_ADDRESS_FIELDS
#define MB_FLAGS 0x00010003
#else
#define MB_FLAGS 0x00000003
#endif

#define STACK_SIZE 16384

    .section .multiboot, "a"
    .balign 4
mb_header:
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)
#ifdef MB_ADDRESS_FIELDS
    .long mb_header                /* header_addr */
    .long mb_image_start           /* load_addr */
    .long mb_data_end              /* load_end_addr */
    .long mb_bss_end               /* bss_end_addr */
    .long mb_entry                 /* entry_addr */
#endif

    .text
    .code32
    .globl mb_entry
mb_entry:
    cli
    movl $stack_top, %esp
    xorl %ebp, %ebp
    pushl %ebx                     /* the information structure */
    pushl %eax                     /* the boot loader's magic */
    call mb_main
1:  cli
    hlt
    jmp 1b

    .bss
    .balign 16
    .skip STACK_SIZE
stack_top:
