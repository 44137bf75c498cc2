#!/usr/bin/env python3
"""Derives the TDX MRTD of a TDVF/OVMF image, independently of tsuba's Rust code.

MRTD is the SHA-384 over the records that the TDX module appends while the host builds the TD
(Intel TDX Module ABI, TDH.MEM.PAGE.ADD and TDH.MR.EXTEND), finalised by TDH.MR.FINALIZE:

  TDH.MEM.PAGE.ADD  one 128-byte record per 4 KiB page added: b"MEM.PAGE.ADD" zero-padded
                    to 16 bytes, the page's GPA (u64 little-endian), 104 zero bytes.
  TDH.MR.EXTEND     per 256-byte chunk of a measured page: a 128-byte record b"MR.EXTEND"
                    zero-padded to 16 bytes, the chunk's GPA, 104 zero bytes; then the chunk's
                    256 bytes.

Which pages are added and measured comes from the image's TDX metadata (TDVF design guide, and
OvmfPkg/ResetVector in edk2): the GUIDed table that ends 0x20 bytes before the image's end
(footer GUID 96b582de-1fb2-45f7-baea-a366c55a082d, preceded by the table's u16 length) holds an
entry e47a6535-984a-4798-865e-4685a7bf8ec2 whose u32 is the distance from the image's end to
the "TDVF" descriptor: signature, length, version, section count, then 32-byte sections
(data offset u32, raw size u32, GPA u64, memory size u64, type u32, attributes u32). Attribute
bit 0 (MR.EXTEND) has the section's bytes measured; bit 1 (PAGE.AUG) has its pages left out of
the build (accepted later by the guest), so they are not in MRTD.

Page order: QEMU >= 9 with upstream KVM adds and measures one page at a time, in section order
(per-page); QEMU 8 with the earlier KVM patches added all pages of a section, then measured them
(per-section).

Usage: derive-mrtd.py FIRMWARE [per-page|per-section]   prints the MRTD in hex.
Standard library only.
"""

import hashlib
import struct
import sys
import uuid

PAGE = 4096
CHUNK = 256
FOOTER_GUID = uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d").bytes_le
METADATA_OFFSET_GUID = uuid.UUID("e47a6535-984a-4798-865e-4685a7bf8ec2").bytes_le
ATTR_MR_EXTEND = 1
ATTR_PAGE_AUG = 2


def guided_table(fw):
    """The {guid: data} entries of the table that ends 0x20 bytes before the image's end."""
    end = len(fw) - 0x20
    if fw[end - 16:end] != FOOTER_GUID:
        sys.exit("no GUIDed table footer: not an OVMF/TDVF image")
    (total,) = struct.unpack_from("<H", fw, end - 18)
    start = end - total
    entries = {}
    pos = end - 18  # entries run backwards from just before the footer's length field
    while pos > start:
        guid = fw[pos - 16:pos]
        (length,) = struct.unpack_from("<H", fw, pos - 18)
        if length < 18 or pos - length < start:
            sys.exit("malformed GUIDed table entry")
        entries[guid] = fw[pos - length:pos - 18]
        pos -= length
    return entries


def sections(fw):
    data = guided_table(fw).get(METADATA_OFFSET_GUID)
    if data is None or len(data) < 4:
        sys.exit("no TDX metadata offset entry")
    (distance,) = struct.unpack_from("<I", data)
    desc = len(fw) - distance
    sig, length, version, count = struct.unpack_from("<4sIII", fw, desc)
    if sig != b"TDVF" or version != 1 or length != 16 + 32 * count:
        sys.exit(f"bad TDVF descriptor at {desc:#x}")
    return [struct.unpack_from("<IIQQII", fw, desc + 16 + 32 * i) for i in range(count)]


def record(op, gpa):
    return op.ljust(16, b"\0") + struct.pack("<Q", gpa) + bytes(104)


def mrtd(fw, order):
    h = hashlib.sha384()
    for data_offset, raw_size, gpa, mem_size, _kind, attributes in sections(fw):
        if attributes & ATTR_PAGE_AUG:
            continue
        if data_offset + raw_size > len(fw) or raw_size > mem_size or mem_size % PAGE:
            sys.exit(f"section at GPA {gpa:#x} lies outside the image or is not whole pages")
        # The section's memory: its raw bytes, zero beyond them.
        memory = fw[data_offset:data_offset + raw_size].ljust(mem_size, b"\0")
        pages = range(mem_size // PAGE)

        def add(p):
            h.update(record(b"MEM.PAGE.ADD", gpa + p * PAGE))

        def extend(p):
            if attributes & ATTR_MR_EXTEND:
                for c in range(PAGE // CHUNK):
                    at = p * PAGE + c * CHUNK
                    h.update(record(b"MR.EXTEND", gpa + at))
                    h.update(memory[at:at + CHUNK])

        if order == "per-page":
            for p in pages:
                add(p)
                extend(p)
        elif order == "per-section":
            for p in pages:
                add(p)
            for p in pages:
                extend(p)
        else:
            sys.exit(f"unknown order {order!r}: per-page or per-section")
    return h.hexdigest()


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: derive-mrtd.py FIRMWARE [per-page|per-section]")
    with open(sys.argv[1], "rb") as f:
        fw = f.read()
    print(mrtd(fw, sys.argv[2] if len(sys.argv) == 3 else "per-page"))


if __name__ == "__main__":
    main()
