"""The byte layout of a .vdb file, walked before OpenVDB reads it, so a damaged file cannot
exhaust memory.

OpenVDB trusts the counts it reads: a flipped bit in a node's child mask or in the root's
child count makes it allocate thousands of nodes, and a corrupt string or metadata length
allocates up to 4 GB, before it notices the file has ended. This walk follows the same path
through the file as OpenVDB's reader (header, file metadata, grid descriptors, then each wanted
grid's metadata, transform, topology and leaf buffers) and checks every count and size against
the bytes that must hold it, allocating nothing but one small int per leaf. A file that passes
holds exactly the nodes it declares, so OpenVDB then needs memory in proportion to the file
(at most ~100× its size for adversarial all-constant leaves; about 1× for noise).

Supported: file format 222 and later (OpenVDB 2.1, 2013, onwards), trees `Tree_<T>_5_4_3` of
float, double, int32, int64, vec3s, vec3d, vec3i values (half-float storage included), the
registered transform maps. Anything else is refused with ValueError rather than read unchecked.
"""
import mmap
import os
import struct

MAGIC = 0x56444220
FIRST_VERSION = 222          # per-grid compression flags and per-node mask metadata (OpenVDB 2.1)
COMPRESS_ZIP, COMPRESS_ACTIVE_MASK, COMPRESS_BLOSC = 0x1, 0x2, 0x4
HALF_SUFFIX = "_HalfFloat"
BLOSC_PAD_BYTES = 128        # OpenVDB pads smaller blosc inputs to this size
SEP = "\x1e"                  # unique-name separator of duplicate grid names

VALUE_SIZES = {"float": 4, "double": 8, "int32": 4, "int64": 8, "vec3s": 12, "vec3d": 24, "vec3i": 12}
HALF_SIZES = {"float": 2, "double": 2, "vec3s": 6, "vec3d": 6}      # real types stored as half
META_SIZES = {"bool": 1, "half": 2, "int32": 4, "int64": 8, "float": 4, "double": 8, "vec2i": 8,
              "vec2s": 8, "vec2d": 16, "vec3i": 12, "vec3s": 12, "vec3d": 24, "vec4i": 16,
              "vec4s": 16, "vec4d": 32, "mat4s": 64, "mat4d": 128, "ptidx32": 4, "ptidx64": 8}
MAP_SIZES = {"AffineMap": 128, "UnitaryMap": 128, "ScaleMap": 120, "UniformScaleMap": 120,
             "TranslationMap": 24, "ScaleTranslateMap": 144, "UniformScaleTranslateMap": 144}
# log2 sizes of the root's children, their children, and the leaves (the 5_4_3 configuration)
LOG2 = (5, 4, 3)
MASK_BYTES = tuple((1 << (3 * n)) // 8 for n in LOG2)        # 4096, 512, 64


class Corrupt(ValueError):
    """The file does not hold what it declares."""


class Grid:
    """What the walk learnt about one grid descriptor."""

    def __init__(self, name, type_name, half, parent, pos, block, end):
        self.name, self.type_name, self.half, self.parent = name, type_name, half, parent
        self.pos, self.block, self.end = pos, block, end
        self.leaves = None


class _Cursor:
    def __init__(self, buf, pos, end):
        self.buf, self.pos, self.end = buf, pos, end

    def need(self, n, what):
        if n < 0 or self.pos + n > self.end:
            raise Corrupt(f"{what} needs {n} bytes at offset {self.pos}; only {self.end - self.pos} remain")

    def skip(self, n, what):
        self.need(n, what)
        self.pos += n

    def take(self, n, what):
        self.need(n, what)
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def unpack(self, fmt, what):
        n = struct.calcsize(fmt)
        self.need(n, what)
        v = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return v if len(v) > 1 else v[0]

    def string(self, what):
        n = self.unpack("<I", what)
        return bytes(self.take(n, what)).decode("utf-8", "replace")


def walk(path, pick=None):
    """Check the file's structure; return its grids {unique name: Grid} in file order.

    pick(names) -> the grid names (as OpenVDB reports them) whose metadata, topology and
    buffers are walked too (all grids when None). Raises ValueError naming what is wrong.
    """
    path = os.fspath(path)
    size = os.path.getsize(path)
    if size < 8:
        raise Corrupt("not a VDB file (too short)")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        c = _Cursor(buf, 0, size)
        if c.unpack("<q", "magic") != MAGIC:
            raise Corrupt("not a VDB file")
        version = c.unpack("<I", "file version")
        if version < FIRST_VERSION:
            raise Corrupt(f"VDB file format {version} predates {FIRST_VERSION} (OpenVDB 2.1); "
                          "resave it with a current OpenVDB")
        c.skip(8, "library version")
        if not c.unpack("<B", "grid offsets flag"):
            raise Corrupt("a streamed VDB (no grid offsets) is not supported; resave it as a file")
        c.skip(36, "UUID")
        _metamap(c, None)
        count = c.unpack("<i", "grid count")
        if count < 0 or count * 36 > c.end - c.pos:
            raise Corrupt(f"the file declares {count} grids but has room for at most {(c.end - c.pos) // 36}")
        grids = {}
        for _ in range(count):
            unique = c.string("grid name")
            type_name = c.string("grid type")
            half = type_name.endswith(HALF_SUFFIX)
            if half:
                type_name = type_name[:-len(HALF_SUFFIX)]
            parent = c.string("instance parent")
            pos, block, end = c.unpack("<qqq", "grid offsets")
            if not (c.pos <= pos <= block <= end <= size):
                raise Corrupt(f"grid {unique!r} has offsets {pos}, {block}, {end} outside the file "
                              f"({size} bytes) or out of order")
            grids[unique] = Grid(unique.split(SEP)[0], type_name, half, parent, pos, block, end)
            c.pos = end
        wanted = set(pick([g.name for g in grids.values()])) if pick else None
        for g in grids.values():
            if wanted is None or g.name in wanted:
                _grid(buf, g)
    return grids


def _metamap(c, grid):
    """A MetaMap: count, then (name, type, size, value) items; returns the __delayedload item's
    (count of leaves it describes) if present."""
    n = c.unpack("<I", "metadata count")
    if n * 12 > c.end - c.pos:
        raise Corrupt(f"{n} metadata items declared; room for at most {(c.end - c.pos) // 12}")
    delayed = None
    for _ in range(n):
        name = c.string("metadata name")
        type_name = c.string("metadata type")
        nbytes = c.unpack("<I", f"size of metadata {name!r}")
        start = c.pos
        c.need(nbytes, f"metadata {name!r}")
        if type_name in META_SIZES:
            if nbytes != META_SIZES[type_name]:
                raise Corrupt(f"metadata {name!r} of type {type_name} has size {nbytes}")
            c.pos += nbytes
        elif type_name == "__delayedload":
            delayed = _delayed_load(c, nbytes, start)
        else:                      # strings and unregistered types: the declared bytes
            c.pos += nbytes
    return delayed


def _delayed_load(c, nbytes, start):
    """OpenVDB's delayed-load table (per-leaf mask flags and compressed sizes): its counts
    size vectors, so they are checked here and against the leaf count later."""
    if nbytes == 0:
        return None
    end = start + nbytes
    sub = _Cursor(c.buf, c.pos, end)
    count = sub.unpack("<I", "delayed-load count")
    for item, width in (("masks", 1), ("sizes", 8)):
        nb = sub.unpack("<I", f"delayed-load {item} size")
        if item == "sizes" and nb == 0xFFFFFFFF:
            break
        if nb > 0:
            blob = sub.take(nb, f"delayed-load {item}")
            raw = struct.unpack_from("<I", blob, 4)[0] if nb >= 16 else -1   # blosc header: bytes it holds
            if raw != count * width and not (count * width < BLOSC_PAD_BYTES == raw):
                raise Corrupt(f"delayed-load {item} do not describe {count} leaves")
        else:
            sub.skip(count * width, f"delayed-load {item}")
    c.pos = end
    return count


def _grid(buf, g):
    parts = g.type_name.split("_")
    if len(parts) != 5 or parts[0] != "Tree" or parts[2:] != [str(n) for n in LOG2] or parts[1] not in VALUE_SIZES:
        raise Corrupt(f"grid {g.name!r} has type {g.type_name!r}; supported: Tree_<T>_5_4_3 with T in "
                      f"{', '.join(VALUE_SIZES)}")
    if g.parent:
        raise Corrupt(f"grid {g.name!r} is an instance of {g.parent!r}; instanced grids are not supported")
    vt = parts[1]
    vsize = VALUE_SIZES[vt]
    disk = HALF_SIZES.get(vt, vsize) if g.half else vsize
    c = _Cursor(buf, g.pos, g.block)
    comp = c.unpack("<I", "compression flags")
    delayed = _metamap(c, g)
    _transform(c)
    c.skip(4, "buffer count")
    tree = _Tree(c, comp, vsize, disk, g.half and vt in HALF_SIZES)
    tree.topology()
    if c.pos != g.block:
        raise Corrupt(f"grid {g.name!r}: topology ends at {c.pos}, its buffers are declared at {g.block}")
    if delayed is not None and delayed != len(tree.leaves):
        raise Corrupt(f"grid {g.name!r}: delayed-load table has {delayed} entries for {len(tree.leaves)} leaves")
    tree.c = _Cursor(buf, g.block, g.end)
    tree.buffers()
    if tree.c.pos != g.end:
        raise Corrupt(f"grid {g.name!r}: buffers end at {tree.c.pos}, the grid is declared to end at {g.end}")
    g.leaves = len(tree.leaves)


def _transform(c):
    kind = c.string("transform type")
    if kind == "NonlinearFrustumMap":
        c.skip(48 + 16, "frustum map")
        kind = c.string("frustum's second map type")
    if kind not in MAP_SIZES:
        raise Corrupt(f"unknown transform map {kind!r}")
    c.skip(MAP_SIZES[kind], f"{kind}")


class _Tree:
    """Root -> 32³ internal -> 16³ internal -> 8³ leaves, as RootNode/InternalNode/LeafNode read them."""

    def __init__(self, c, comp, vsize, disk, half):
        self.c, self.comp, self.vsize, self.disk, self.half = c, comp, vsize, disk, half
        self.children = []      # root children: (origin, [active counts of their leaves])
        self.leaves = []

    def topology(self):
        c, vs = self.c, self.vsize
        c.skip(vs, "background value")
        tiles, children = c.unpack("<II", "root tile and child counts")
        min_child = 12 + 2 * MASK_BYTES[0] + 1
        room = c.end - c.pos
        if tiles * (13 + vs) + children * min_child > room:
            raise Corrupt(f"root declares {tiles} tiles and {children} children; the topology has room "
                          f"for at most {room // (13 + vs)} tiles or {room // min_child} children")
        seen = set()
        for k in range(tiles + children):
            origin = c.unpack("<3i", "root entry origin")
            if origin in seen:           # OpenVDB would keep one and lose the other's buffers
                raise Corrupt(f"root has two entries at {origin}")
            seen.add(origin)
            if k < tiles:
                c.skip(vs + 1, "tile value")
                continue
            first = len(self.leaves)
            self._internal(0)
            self.children.append((origin, first, len(self.leaves)))

    def _internal(self, level):
        c = self.c
        nbytes = MASK_BYTES[level]
        child = int.from_bytes(c.take(nbytes, "child mask"), "little")
        value = int.from_bytes(c.take(nbytes, "value mask"), "little")
        self._values(8 * nbytes, value.bit_count(), MASK_BYTES[level])
        n = child.bit_count()
        below = 2 * MASK_BYTES[level + 1] + 1 if level == 0 else MASK_BYTES[2]
        if n * below > c.end - c.pos:
            raise Corrupt(f"a node declares {n} children; the topology has room for {(c.end - c.pos) // below}")
        for _ in range(n):
            if level == 0:
                self._internal(1)
            else:
                self.leaves.append(int.from_bytes(c.take(MASK_BYTES[2], "leaf mask"), "little").bit_count())

    def buffers(self):
        c = self.c
        for _, first, last in sorted(self.children):      # RootNode reads its table in origin order
            for active in self.leaves[first:last]:
                c.skip(MASK_BYTES[2], "leaf mask")
                self._values(8 * MASK_BYTES[2], active, MASK_BYTES[2])

    def _values(self, total, active, mask_bytes):
        """io::readCompressedValues: flag byte, inactive values, selection mask, then the data."""
        c = self.c
        flag = c.unpack("<b", "value flags")
        if not 0 <= flag <= 6:
            raise Corrupt(f"value flag {flag} at offset {c.pos - 1}")
        if flag in (2, 4, 5):
            c.skip(self.vsize * (2 if flag == 5 else 1), "inactive values")
        if flag in (3, 4, 5):
            c.skip(mask_bytes, "selection mask")
        n = active if (self.comp & COMPRESS_ACTIVE_MASK and flag != 6) else total
        if self.half and n < 1:
            return
        nbytes = n * self.disk
        if self.comp & (COMPRESS_BLOSC | COMPRESS_ZIP):
            chunk = c.unpack("<q", "compressed size")
            if chunk <= 0 and -chunk != nbytes:
                raise Corrupt(f"an uncompressed chunk of {-chunk} bytes where {nbytes} are expected")
            c.skip(abs(chunk), "compressed values")
        else:
            c.skip(nbytes, "values")
