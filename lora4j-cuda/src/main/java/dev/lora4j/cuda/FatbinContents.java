package dev.lora4j.cuda;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;

/**
 * What a CUDA fatbin holds: one entry per target, machine code (an ELF cubin for one sm_XY) or PTX (for one
 * compute_XY, which the driver compiles for newer GPUs). The container, as nvcc writes it: a 16-byte header
 * (magic 0xBA55ED50, u16 version, u16 header size, u64 size of the entries), then entries, each with a header of
 * its own (u16 kind: 1 PTX, 2 ELF; u32 header size at 4; u64 payload size at 8; u32 architecture at 28, e.g. 90;
 * u32 flags at 40, bit 0x8000 set when the payload is compressed) followed by its payload.
 */
record FatbinContents(List<Entry> entries) {
    static final int MAGIC = 0xBA55ED50;
    static final int KIND_PTX = 1;
    static final int KIND_ELF = 2;

    record Entry(int kind, int arch, boolean compressed, int payloadOffset, long payloadSize) {
        String target() { return (kind == KIND_PTX ? "compute_" : "sm_") + arch; }
    }

    FatbinContents {
        entries = List.copyOf(entries);
    }

    /** Parses a fatbin; a malformed one is an IllegalArgumentException saying what is wrong. */
    static FatbinContents parse(byte[] image) {
        ByteBuffer b = ByteBuffer.wrap(image).order(ByteOrder.LITTLE_ENDIAN);
        if (image.length < 16 || b.getInt(0) != MAGIC) {
            throw new IllegalArgumentException("not a CUDA fatbin: the first 4 bytes are not 0xBA55ED50");
        }
        int headerSize = Short.toUnsignedInt(b.getShort(6));
        long entriesSize = b.getLong(8);
        long end = headerSize + entriesSize;
        if (end > image.length) {
            throw new IllegalArgumentException("truncated fatbin: header says " + end + " bytes, image has " + image.length);
        }
        List<Entry> entries = new ArrayList<>();
        long off = headerSize;
        while (off < end) {
            if (off + 44 > end) throw new IllegalArgumentException("truncated fatbin entry header at byte " + off);
            int at = (int) off;
            int kind = Short.toUnsignedInt(b.getShort(at));
            long entryHeader = Integer.toUnsignedLong(b.getInt(at + 4));
            long payload = b.getLong(at + 8);
            int arch = b.getInt(at + 28);
            int flags = b.getInt(at + 40);
            if (entryHeader < 44 || off + entryHeader + payload > end) {
                throw new IllegalArgumentException("malformed fatbin entry at byte " + off);
            }
            entries.add(new Entry(kind, arch, (flags & 0x8000) != 0, (int) (off + entryHeader), payload));
            off += entryHeader + payload;
        }
        return new FatbinContents(entries);
    }

    /** The targets, e.g. [sm_80, sm_86, sm_89, compute_90, sm_90]. */
    List<String> targets() {
        return entries.stream().map(Entry::target).toList();
    }

    /**
     * Whether a GPU of this compute capability (e.g. 89) can run the image: machine code of the same major version
     * and no newer minor version (sm_86 code runs on an sm_89 GPU), or PTX no newer than the GPU.
     */
    boolean runsOn(int computeCapability) {
        for (Entry e : entries) {
            if (e.kind() == KIND_ELF && e.arch() / 10 == computeCapability / 10 && e.arch() <= computeCapability) return true;
            if (e.kind() == KIND_PTX && e.arch() <= computeCapability) return true;
        }
        return false;
    }
}
