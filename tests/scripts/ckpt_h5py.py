"""h5py side of the checkpoint tests (tests/scripts/ckpt_e2e.sh). Exits 77 without h5py.

usage: ckpt_h5py.py compare TP22_STEP_DIR TP1_STEP_DIR DUMP_DIR
       ckpt_h5py.py flip STEP_DIR ENTRY_PATH        flips one byte in the entry's first piece
       ckpt_h5py.py set-version STEP_DIR N          rewrites index.h5's format_version

compare: opens index.h5 of a tp=2 dp=2 checkpoint from ANOTHER working directory (so that the
virtual datasets' relative source names must resolve against index.h5's own directory), and
for every tensor path in it checks
  - the virtual dataset has the global shape of the same tensor in the tp=1 checkpoint;
  - model/* equals, bit for bit, the same run's --dump-params output at that step (an
    independent assembly of the global tensors: TP all-gather and slice placement in C);
  - every tensor, m and v included, equals bit for bit the pieces read from the shard files
    and placed by the piece table (the virtual mapping is exactly the piece table);
  - every tensor is close to the tp=1 run's: parameters within 1e-5 absolute (compare_dumps.py:
    fp32 reductions in another order, amplified by AdamW's m / sqrt(v)), m within 1e-7 + 1e-3 |m|
    and v within 1e-11 + 1e-3 |v| (the moments average gradients that differ between layouts by
    fp32 rounding: measured at step 10 at most 7.5e-9 absolute on m, whose typical size is 2e-3,
    and 2.2e-5 relative on v; a misplaced or missing slice is off by O(|m|), O(|v|) and fails).
"""
import os
import sys

try:
    import h5py
    import numpy as np
except ImportError:
    print("ckpt_h5py: h5py or numpy is missing: skipped")
    sys.exit(77)


def load_dump(d):
    params = np.fromfile(f"{d}/params.bin", dtype=np.float32)
    out = {}
    for line in open(f"{d}/layout.txt"):
        name, ndim, s0, s1, off, n = line.split()
        shape = (int(s0),) if ndim == "1" else (int(s0), int(s1))
        out[name] = params[int(off):int(off) + int(n)].reshape(shape)
    return out


def names(f):
    return [p.decode() if isinstance(p, bytes) else p for p in f["tensor_paths"][...]]


def compare(tp22, tp1, dump):
    tp22, tp1, dump = (os.path.abspath(x) for x in (tp22, tp1, dump))
    os.chdir("/")
    ref = load_dump(dump)
    f, g = h5py.File(f"{tp22}/index.h5", "r"), h5py.File(f"{tp1}/index.h5", "r")
    assert f.attrs["layout_tp"] == 2 and f.attrs["layout_dp"] == 2, "not a tp=2 dp=2 checkpoint"
    paths = names(f)
    assert sorted(paths) == sorted(names(g)), "the two checkpoints hold different tensors"
    bad = 0
    for p in paths:
        x = f[p][...]
        y = g[p][...].astype(np.float64)
        if x.shape != y.shape:
            print(f"{p}: shape {x.shape} via the virtual dataset, {y.shape} at tp=1")
            bad += 1
            continue
        pieces = np.zeros_like(x)
        for shard, r0, c0, rows, cols in f[p].attrs["pieces"]:
            with h5py.File(f"{tp22}/shard_{shard:05d}.h5", "r") as s:
                block = s[p][...]
            if x.ndim == 1:
                pieces[r0:r0 + rows] = block
            else:
                pieces[r0:r0 + rows, c0:c0 + cols] = block
        if not np.array_equal(x, pieces):
            print(f"{p}: the virtual dataset differs from the pieces in the shards")
            bad += 1
        if p.startswith("model/") and not np.array_equal(x, ref[p[6:]].reshape(x.shape)):
            print(f"{p}: differs from the run's --dump-params output")
            bad += 1
        atol, rtol = (1e-5, 0) if p.startswith("model/") else \
            (1e-7, 1e-3) if p.startswith("optim/m/") else (1e-11, 1e-3)
        err = np.abs(x - y) - (atol + rtol * np.abs(y))
        if (err > 0).any():
            i = np.unravel_index(np.argmax(err), err.shape)
            print(f"{p}: {x[i]} at tp=2 dp=2 vs {y[i]} at tp=1 (index {i})")
            bad += 1
    print(f"ckpt_h5py: {len(paths)} tensors compared, {bad} problems")
    return 1 if bad else 0


def flip(step_dir, path):
    with h5py.File(f"{step_dir}/index.h5", "r") as f:
        shard = int(f[path].attrs["pieces"][0][0])
    fname = f"{step_dir}/shard_{shard:05d}.h5"
    with h5py.File(fname, "r") as s:
        info = s[path].id.get_chunk_info(0)
    with open(fname, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        b = fh.read(1)
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(bytes([b[0] ^ 0x10]))
    print(f"flipped a byte of {path} at offset {info.byte_offset + info.size // 2} of {fname}")
    return 0


def set_version(step_dir, n):
    with h5py.File(f"{step_dir}/index.h5", "r+") as f:
        f.attrs["format_version"] = np.int32(n)
    return 0


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "compare":
        sys.exit(compare(*sys.argv[2:5]))
    if cmd == "flip":
        sys.exit(flip(*sys.argv[2:4]))
    if cmd == "set-version":
        sys.exit(set_version(sys.argv[2], int(sys.argv[3])))
    sys.exit(2)
