"""What the ARM targets' hot loops compile to, and how close they come to the core's FMA peak.

    python tools/arm_codegen.py [--target pi3 pi3_64 pi0 aarch64] [--tiles all|default] [--json FILE]

Each target's sources are compiled exactly as its profiler build compiles them (CMake configured
with the target's toolchain file; the compile commands it exports, with -S), and the innermost
loop of each hot kernel is cut out of the assembly:
  - the GEMM micro-kernel of every register tile (`gemm_tile`; unrolled's and Winograd's GEMM),
  - depthwise 3x3 stride 1 and stride 2 (simple's row kernel, 4 pixels x one vector),
  - the Winograd F(2x2,3x3) / F(4x4,3x3) input and output transforms (tools/arm_codegen_probes.cc),
  - im2col's row copy,
  - the int8 kernels' loops (kernels/int8): the GEMM's NEON tile (smlal / vmlal.s16 by lane), its
    dot-product tile (sdot; modelled on a cortex-a55, a core that has the instruction: the Pi 3's
    Cortex-A53 and the Pi 4's A72 have not), the portable tile (pi0), and depthwise 3x3.
Per loop: the multiply-accumulates (fmla / vfma / vmla; an int8 loop's integer ones), other FP arithmetic, loads, stores,
shuffles, register spills (stack loads and stores inside the loop), and the cycles per iteration
llvm-mca predicts, against the ideal in which the FP pipe does nothing but the loop's arithmetic:
% of predicted peak. The limit column names what holds a loop back (the busiest resource, or
dependencies / in-order stalls when no resource is saturated).

LLVM 14's models: aarch64 on cortex-a53 (Pi 3 and Zero 2 in 64-bit mode); armv7 only on
out-of-order cores, so pi3 (armv7 NEON) is modelled as a cortex-a72 (a Pi 4 in 32-bit mode);
ARMv6 on none, so pi0 gets the static instruction mix alone. It is a model of the core, not a
board: no caches, no memory system.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBES = ROOT / "tools" / "arm_codegen_probes.cc"


@dataclass(frozen=True)
class ArmTarget:
    name: str
    toolchain: str  # csrc/toolchains/<file>
    compiler: str
    triple: str | None  # llvm-mca's triple; None: no model
    mcpu: str | None
    model_note: str


TARGETS = {
    "pi3_64": ArmTarget("pi3_64", "aarch64.cmake", "aarch64-linux-gnu-g++", "aarch64-linux-gnu", "cortex-a53",
                        "cortex-a53 model"),
    "aarch64": ArmTarget("aarch64", "aarch64.cmake", "aarch64-linux-gnu-g++", "aarch64-linux-gnu", "cortex-a72",
                         "cortex-a72 model (Pi 4)"),
    "pi3": ArmTarget("pi3", "pi3.cmake", "arm-linux-gnueabihf-g++", "armv7-linux-gnueabihf", "cortex-a72",
                     "cortex-a72 model (LLVM 14 has no in-order armv7 model)"),
    "pi0": ArmTarget("pi0", "pi0.cmake", "arm-linux-gnueabi-g++", None, None,
                     "static mix only (LLVM 14 models no ARMv6 core)"),
}

GEMM_H = ROOT / "csrc" / "kernels" / "gemm" / "gemm.h"


def _gemm_h_ints(name: str) -> tuple[int, ...]:
    """An integer constant, or an integer array's values, as gemm.h defines it (one place for them)."""
    m = re.search(rf"inline constexpr int {name}(?:\[\])? = \{{?([\d, ]+)\}}?;", GEMM_H.read_text())
    if not m:
        raise RuntimeError(f"arm_codegen: {name} not found in {GEMM_H}")
    return tuple(int(v) for v in m.group(1).split(","))


TILE_CODES = _gemm_h_ints("kTileCodes")


@dataclass(frozen=True)
class LoopSpec:
    """One hot loop: where it is compiled from, which function holds it, how to find it."""
    name: str
    source: str  # relative to the checkout
    function: str  # a regex on the demangled name
    pick: str  # "most_fma": the innermost loop with the most FP multiply-accumulates;
    #            "body": the whole function (straight-line code); "calls": the innermost loop with a call
    tile: int | None = None
    # An int8 loop: a regex on the instruction text naming its multiply-accumulates (counted in the
    # FMA column, and its peak), the targets it is reported on, and a core model of its own.
    mac: str | None = None
    targets: tuple[str, ...] | None = None
    mcpu: str | None = None

    def mac_pattern(self) -> re.Pattern | None:
        return re.compile(self.mac) if self.mac else None


(PACKED_A,) = _gemm_h_ints("kPackedA")  # a tile code's offset for reading A packed


def tile_name(tile: int) -> str:
    rows, vectors = divmod(tile % PACKED_A, 10)
    return f"gemm {rows}x{vectors}v" + (" packed A" if tile >= PACKED_A else "")


def tile_function(tile: int) -> str:
    """The demangled name of the tile's micro-kernel (gemm.cc's tile_kernel<MR, NRV, PackedA>)."""
    rows, vectors = divmod(tile % PACKED_A, 10)
    return f"tile_kernel<{rows}, {vectors}, {'true' if tile >= PACKED_A else 'false'}>"


def loop_specs(tiles: tuple[int, ...]) -> list[LoopSpec]:
    specs = [LoopSpec(tile_name(t), "csrc/kernels/gemm/gemm.cc", re.escape(tile_function(t)), "most_fma", tile=t)
             for t in tiles]
    specs += [
        LoopSpec("depthwise 3x3 s1", "csrc/kernels/simple/conv_simple.cc", r"fast_rows<3, 1, \d+, \d+>", "most_fma"),
        LoopSpec("depthwise 3x3 s2", "csrc/kernels/simple/conv_simple.cc", r"fast_rows<3, 2, \d+, \d+>", "most_fma"),
        *(LoopSpec(f"winograd {kind} F{m}", "tools/arm_codegen_probes.cc", rf"^probe_winograd_{kind}_{m}$", "body")
          for kind in ("input", "output") for m in (2, 4, 6)),
        LoopSpec("im2col", "csrc/kernels/unrolled/conv_unrolled.cc", r"UnrolledConv::run(_block)?\(", "calls"),
        *INT8_LOOPS,
    ]
    return specs


_QCONV = "csrc/kernels/int8/qconv.cc"
_NEON = ("pi3_64", "aarch64", "pi3")
INT8_LOOPS = (
    # the NEON tile inlined into the GEMM's task; on armv7 `smlal` without a v is the scalar one
    LoopSpec("int8 gemm neon", _QCONV, r"GemmQConv::run\(.*lambda", "most_fma", mac=r"^(smlal2?\s+v|vmlal\.s16\s)",
             targets=_NEON),
    LoopSpec("int8 gemm dot", _QCONV, r"tiles::neon_dot<4, false", "most_fma", mac=r"^sdot\s",
             targets=("pi3_64", "aarch64"), mcpu="cortex-a55"),
    LoopSpec("int8 gemm portable", _QCONV, r"GemmQConv::run\(.*lambda", "most_fma", mac=r"^(mla|smlabb)\s",
             targets=("pi0",)),
    # (the first tap's products start the sums: smull / vmull)
    LoopSpec("int8 depthwise 3x3", _QCONV, r"DepthwiseQConv::pixels<9>", "most_fma",
             mac=r"^(mla\s+v|vmla\.i32\s|smlal2?\s+v|smull2?\s+v|vmlal\.s16\s|vmull\.s16\s|mla\s|smlabb\s)"),
)


# ---- compiling as the profiler build does -------------------------------------------------------

def compile_commands(target: ArmTarget, build: Path) -> dict[str, list[str]]:
    """source path -> compiler arguments, from CMake configured with the target's toolchain."""
    subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                    f"-DCMAKE_TOOLCHAIN_FILE={ROOT / 'csrc' / 'toolchains' / target.toolchain}",
                    "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON"], check=True, capture_output=True, text=True)
    entries = json.loads((build / "compile_commands.json").read_text())
    return {str(Path(e["file"]).resolve()): shlex.split(e["command"]) for e in entries}


def assembly(args: list[str], source: Path, out: Path) -> str:
    """The compile command of a core source, turned to emit assembly for `source`."""
    cmd, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a in ("-o", "-c"):
            skip = True
            continue
        cmd.append(a)
    cmd += ["-S", "-o", str(out), str(source)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if "error" in line][:3]
        raise SystemExit(f"arm_codegen: {cmd[0]} failed on {source.name}: " + " | ".join(errors))
    return out.read_text()


# ---- cutting loops out of the assembly -----------------------------------------------------------

_COND = r"(eq|ne|cs|hs|cc|lo|mi|pl|vs|vc|hi|ls|ge|lt|gt|le|al)"
_BRANCH = re.compile(rf"^(b\.?{_COND}?(\.w)?|cbn?z|tbn?z)$")
_CALL = re.compile(r"^(bl|blx)$")


@dataclass
class Insn:
    mnemonic: str
    operands: str
    text: str


def demangle(names: list[str]) -> list[str]:
    if not names:
        return []
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    return out.splitlines()


def functions(asm: str) -> dict[str, list[str]]:
    """demangled function name -> its lines."""
    lines = asm.splitlines()
    spans: dict[str, list[str]] = {}
    current, body = None, []
    for line in lines:
        m = re.match(r"\s*\.type\s+([^,]+),\s*[%@]function", line)
        if m:
            current, body = m.group(1), []
            continue
        if current and re.match(rf"\s*\.size\s+{re.escape(current)},", line):
            spans[current] = body
            current = None
            continue
        if current:
            body.append(line)
    return dict(zip(demangle(list(spans)), spans.values()))


def parse(lines: list[str]) -> tuple[list[Insn | str], dict[str, int]]:
    """Instructions and labels (as strings) in order, and each label's position."""
    items: list[Insn | str] = []
    labels: dict[str, int] = {}
    for raw in lines:
        line = re.split(r"\s(//|@)\s?", raw)[0].rstrip() if ("//" in raw or "@" in raw) else raw.rstrip()
        s = line.strip()
        if not s:
            continue
        m = re.match(r"^([.\w$]+):$", s)
        if m:
            labels[m.group(1)] = len(items)
            items.append(m.group(1))
            continue
        if s.startswith("."):
            continue
        parts = s.split(None, 1)
        items.append(Insn(parts[0].lower(), parts[1] if len(parts) > 1 else "", s))
    return items, labels


def branch_target(items: list[Insn | str], labels: dict[str, int], j: int, target: str) -> int | None:
    """Where the branch at position j goes: a named label, or an assembler local label (`1b`: the
    nearest `1:` before, `1f`: the nearest after; the hand-written loops of gemm_asm.inc use them)."""
    m = re.fullmatch(r"(\d+)([bf])", target)
    if not m:
        return labels.get(target)
    name, back = m.group(1), m.group(2) == "b"
    span = range(j - 1, -1, -1) if back else range(j + 1, len(items))
    return next((i for i in span if items[i] == name), None)


def loops(items: list[Insn | str], labels: dict[str, int]) -> list[tuple[int, int]]:
    """(first, last) item positions of each backward branch's loop, innermost ones only."""
    found = []
    for j, it in enumerate(items):
        if isinstance(it, Insn) and _BRANCH.match(it.mnemonic):
            i = branch_target(items, labels, j, it.operands.split(",")[-1].strip())
            if i is not None and i < j:
                found.append((i, j))
    return [(i, j) for i, j in found
            if not any((a, b) != (i, j) and i <= a and b <= j for a, b in found)]


# ---- counting ----------------------------------------------------------------------------------

_FMA = re.compile(r"^(fmla|fmls|fmadd|fmsub|fnmadd|fnmsub|vfma|vfms|vmla|vmls|vfnma|vfnms)(\.f32|\.f64)?$")
_FP = re.compile(r"^(fadd|fsub|fmul|fneg|fabs|fmax|fmin|fdiv|fmaxnm|fminnm|faddp|"
                 r"vadd|vsub|vmul|vneg|vabs|vmax|vmin|vdiv|vpadd)\.?(f32|f64)?$")
_SHUFFLE = re.compile(r"^(ext|zip[12]|uzp[12]|trn[12]|dup|ins|rev64|tbl|umov|"
                      r"vext|vzip|vuzp|vtrn|vdup|vswp|vrev64)(\.\w+)?$")
_LOAD = re.compile(r"^(ldr\w*|ldp\w*|ldur\w*|ldnp|ld[1-4]r?|vldr|vld[1-4]|vldm\w*|ldm\w*|pop)(\.\w+)?$")
_STORE = re.compile(r"^(str\w*|stp\w*|stur\w*|stnp|st[1-4]|vstr|vst[1-4]|vstm\w*|stm\w*|push)(\.\w+)?$")
_STACK = re.compile(r"\[(sp|x29|fp|r11)\b|^(sp|fp)!?,")


def is_fp_arith(insn: Insn) -> bool:
    """FP arithmetic, vector or scalar (an f32 suffix on armv7, s / v registers on aarch64)."""
    if _FMA.match(insn.mnemonic):
        return True
    if not _FP.match(insn.mnemonic):
        return False
    return insn.mnemonic.startswith("f") or ".f32" in insn.mnemonic or ".f64" in insn.mnemonic


@dataclass
class Mix:
    instructions: int = 0
    fma: int = 0
    fp_other: int = 0
    loads: int = 0
    stores: int = 0
    shuffles: int = 0
    spills: int = 0
    calls: list[str] = field(default_factory=list)


def is_mac(insn: Insn, mac: re.Pattern | None) -> bool:
    """A multiply-accumulate of the loop's kind: FP FMAs, or an int8 loop's own (LoopSpec.mac)."""
    return bool(mac.match(insn.text)) if mac else bool(_FMA.match(insn.mnemonic))


def mix(insns: list[Insn], mac: re.Pattern | None = None) -> Mix:
    m = Mix()
    for it in insns:
        m.instructions += 1
        if is_mac(it, mac):
            m.fma += 1
        elif is_fp_arith(it):
            m.fp_other += 1
        elif _SHUFFLE.match(it.mnemonic) or (it.mnemonic.startswith("vmov") and "[" in it.operands):
            m.shuffles += 1
        if _LOAD.match(it.mnemonic):
            m.loads += 1
        if _STORE.match(it.mnemonic):
            m.stores += 1
        if (_LOAD.match(it.mnemonic) or _STORE.match(it.mnemonic)) and _STACK.search(it.operands):
            m.spills += 1
        if _CALL.match(it.mnemonic):
            m.calls.append(it.operands.split("(")[0])
    return m


_CALLEE_SAVED = re.compile(r"^\{?\s*(d(8|9|1[0-5])|x(19|2\d|30)|r([4-9]|1[01])|lr)\b")


def is_save_restore(insn: Insn) -> bool:
    """A prologue / epilogue access to a callee-saved register: the call's cost, not the loop's."""
    if insn.mnemonic in ("push", "pop", "vpush", "vpop"):
        return True
    return bool((_LOAD.match(insn.mnemonic) or _STORE.match(insn.mnemonic)) and _STACK.search(insn.operands)
                and _CALLEE_SAVED.match(insn.operands))


def pick_loop(lines: list[str], how: str, mac: re.Pattern | None = None) -> list[Insn]:
    items, labels = parse(lines)
    if how == "body":
        return [it for it in items if isinstance(it, Insn) and not it.mnemonic.startswith("ret")
                and it.mnemonic != "bx" and not is_save_restore(it)
                and not (it.mnemonic in ("add", "sub") and it.operands.startswith("sp,"))]
    candidates = [[it for it in items[i:j + 1] if isinstance(it, Insn)] for i, j in loops(items, labels)]
    if how == "calls":  # the loop that copies: the most memcpy calls, else the most loads and stores
        def copies(c: list[Insn]) -> tuple[int, int]:
            m = mix(c)
            return sum("memcpy" in x for x in m.calls), m.loads + m.stores
        return max(candidates, key=copies) if candidates else []
    return max(candidates, key=lambda c: (mix(c, mac).fma, -len(c))) if candidates else []


# ---- llvm-mca -----------------------------------------------------------------------------------

@dataclass
class Prediction:
    cycles: float  # per iteration
    ideal: float  # per iteration, the FP arithmetic alone on its pipes
    limit: str


def mca_binary() -> str:
    for name in ("llvm-mca-14", "llvm-mca"):
        if shutil.which(name):
            return name
    raise SystemExit("arm_codegen: llvm-mca is not installed (Debian: apt-get install llvm-14)")


def mca_input(insns: list[Insn], arm32: bool) -> str:
    """The loop as llvm-mca reads it: branches aimed at the loop's own label."""
    head = [".syntax unified", ".fpu neon-fp-armv8"] if arm32 else []
    body = []
    for it in insns:
        if _BRANCH.match(it.mnemonic):
            body.append(f"{it.mnemonic} .Lloop" if not it.mnemonic.startswith(("cb", "tb"))
                        else f"{it.mnemonic} {it.operands.rsplit(',', 1)[0]}, .Lloop")
        elif _CALL.match(it.mnemonic):
            continue  # a call's callee is not modelled: the limit column says so
        else:
            body.append(it.text)
    return "\n".join([*head, ".Lloop:", *body, ""])


def predict(target: ArmTarget, insns: list[Insn], m: Mix, iterations: int = 200, mac: re.Pattern | None = None,
            mcpu: str | None = None) -> Prediction:
    """llvm-mca's cycles per iteration; the ideal counts the FP arithmetic, or an int8 loop's
    multiply-accumulates (`mac`), on their pipes."""
    text = mca_input(insns, arm32=target.triple.startswith("arm"))
    proc = subprocess.run([mca_binary(), f"-mtriple={target.triple}", f"-mcpu={mcpu or target.mcpu}",
                           f"-iterations={iterations}", "-resource-pressure", "-instruction-info"],
                          input=text, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"llvm-mca failed on {target.name}: {proc.stderr.strip().splitlines()[:3]}")
    out = proc.stdout
    cycles = int(re.search(r"Total Cycles:\s+(\d+)", out).group(1)) / iterations
    # per-instruction reciprocal throughputs, in program order
    info = out.split("Instruction Info:")[1].split("Resources:")[0]
    rthroughputs = []
    for line in info.splitlines():
        cols = line.split()
        if len(cols) >= 4 and cols[0].isdigit() and re.match(r"^\d+\.\d+$", cols[2]):
            rthroughputs.append(float(cols[2]))
    fp_insns = [it for it in insns if not _CALL.match(it.mnemonic)]
    ideal = sum(r for r, it in zip(rthroughputs, fp_insns) if (is_mac(it, mac) if mac else is_fp_arith(it)))
    limit = bottleneck(out, cycles, m)
    return Prediction(cycles, ideal, limit)


def bottleneck(out: str, cycles: float, m: Mix) -> str:
    names = dict(re.findall(r"^\[(\d+(?:\.\d+)?)\]\s+-\s+(\S+)", out.split("Resources:")[1], re.M))
    pressure = out.split("Resource pressure per iteration:")[1].splitlines()
    header = [c.strip("[]") for c in pressure[1].split()]
    values = [float(v) if v != "-" else 0.0 for v in pressure[2].split()]
    busiest, load = max(zip(header, values), key=lambda hv: hv[1])
    unit = names.get(busiest, busiest)
    kind = ("loads/stores" if re.search(r"LdSt|UnitL|UnitS|Ld|St", unit) else
            "FP pipe" if re.search(r"FP|UnitF|UnitV|MAC|FPMDS|UnitX|UnitW", unit) else
            "integer ALU" if re.search(r"ALU|UnitI|UnitM", unit) else unit)
    if load >= 0.85 * cycles:
        what = f"{kind} ({unit} busy {load:.1f} of {cycles:.1f} cycles)"
    else:
        what = f"dependencies / issue stalls (busiest {unit} {load:.1f} of {cycles:.1f} cycles)"
    if m.spills:
        what += f"; {m.spills} spill accesses"
    if m.shuffles and m.shuffles * 4 >= m.instructions:
        what += f"; {m.shuffles} shuffles"
    if m.calls:
        what += f"; calls {', '.join(sorted(set(m.calls)))} (not modelled)"
    return what


# ---- the report ---------------------------------------------------------------------------------

@dataclass
class LoopReport:
    target: str
    model: str
    loop: str
    tile: int | None
    instructions: int
    fma: int
    fp_other: int
    loads: int
    stores: int
    shuffles: int
    spills: int
    cycles_per_iteration: float | None
    ideal_cycles: float | None
    percent_of_peak: float | None
    limit: str


def analyse(target: ArmTarget, tiles: tuple[int, ...]) -> list[LoopReport]:
    if shutil.which(target.compiler) is None:
        raise SystemExit(f"arm_codegen: {target.compiler} is not installed (tools/test_all.sh installs it)")
    reports = []
    with tempfile.TemporaryDirectory(prefix=f"layertune-codegen-{target.name}-") as tmp:
        tmp = Path(tmp)
        commands = compile_commands(target, tmp / "build")
        template = commands[str((ROOT / "csrc/kernels/gemm/gemm.cc").resolve())]
        cache: dict[str, dict[str, list[str]]] = {}
        for spec in loop_specs(tiles):
            if spec.targets is not None and target.name not in spec.targets:
                continue
            if spec.source not in cache:
                src = (ROOT / spec.source).resolve()
                args = commands.get(str(src), template)  # the probes take the core's flags
                cache[spec.source] = functions(assembly(args, src, tmp / (src.stem + ".s")))
            funcs = {name: body for name, body in cache[spec.source].items() if re.search(spec.function, name)}
            if not funcs:
                raise RuntimeError(f"{target.name}: no function matching {spec.function} in {spec.source}")
            # a template instantiated more than once (clones): the largest body
            body = max(funcs.values(), key=len)
            mac = spec.mac_pattern()
            insns = pick_loop(body, spec.pick, mac)
            m = mix(insns, mac)
            model = f"{spec.mcpu} model" if spec.mcpu and target.triple else target.model_note
            row = (target.name, model, spec.name, spec.tile, m.instructions, m.fma, m.fp_other, m.loads,
                   m.stores, m.shuffles, m.spills)  # the fields both kinds of row share
            if target.triple:
                p = predict(target, insns, m, mac=mac, mcpu=spec.mcpu)
                pct = 100 * p.ideal / p.cycles if p.cycles else None
                reports.append(LoopReport(*row, round(p.cycles, 2), round(p.ideal, 2),
                                          round(pct, 1) if pct is not None else None, p.limit))
            else:
                share = 100 * (m.fma + m.fp_other) / max(m.instructions, 1)
                limit = f"static mix: FP arithmetic is {share:.0f}% of the loop's instructions"
                if m.spills:
                    limit += f"; {m.spills} spill accesses"
                if m.calls:
                    limit += f"; calls {', '.join(sorted(set(m.calls)))}"
                reports.append(LoopReport(*row, None, None, None, limit))
    return reports


def best_tile(reports: list[LoopReport]) -> int | None:
    """The tile a target should default to: no spills, the highest % of peak (the static FMA share
    where there is no model), then the most FMAs per iteration (fewer loads per FMA)."""
    gemm = [r for r in reports if r.tile and r.spills == 0]
    if not gemm:
        return None

    def score(r: LoopReport) -> tuple[float, int]:
        pct = r.percent_of_peak if r.percent_of_peak is not None else 100 * r.fma / max(r.instructions, 1)
        return round(pct), r.fma
    return max(gemm, key=score).tile


def default_tiles() -> dict[str, int]:
    """Each ARM target's compiled-in default tile, read from gemm.h (what the report checks)."""
    text = GEMM_H.read_text()
    found = {}
    for guard, names in ((r"defined\(__aarch64__\)", ("pi3_64", "aarch64")), (r"#elif defined\(__ARM_NEON\)", ("pi3",)),
                         (r"#else", ("pi0",))):
        m = re.search(guard + r"[^\n]*\ninline constexpr int kDefaultTile = (\d+);", text)
        if m:
            for n in names:
                found[n] = int(m.group(1))
    return found


def markdown(reports: list[LoopReport]) -> str:
    defaults = default_tiles()
    rows = ["| target | model | loop | FMA / MAC | other FP | loads | stores | shuffles | spills | cycles/iter "
            "| ideal | % of peak | limit |", "| --- " * 13 + "|"]
    for r in reports:
        mark = " (default)" if r.tile and defaults.get(r.target) == r.tile else ""
        def fmt(v):
            return "-" if v is None else f"{v:g}"
        rows.append(f"| {r.target} | {r.model} | {r.loop}{mark} | {r.fma} | {r.fp_other} | {r.loads} | {r.stores} "
                    f"| {r.shuffles} | {r.spills} | {fmt(r.cycles_per_iteration)} | {fmt(r.ideal_cycles)} "
                    f"| {fmt(r.percent_of_peak)} | {r.limit} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    ap.add_argument("--tiles", choices=["all", "default"], default="all",
                    help="GEMM tiles to analyse: every tile the core has, or each target's default")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = ap.parse_args(argv)
    defaults = default_tiles()
    everything: list[LoopReport] = []
    for name in args.target:
        tiles = TILE_CODES if args.tiles == "all" else (defaults[name],)
        print(f"{name}: compiling and modelling {len(loop_specs(tiles))} loops ...", file=sys.stderr)
        reports = analyse(TARGETS[name], tiles)
        everything += reports
        if args.tiles == "all":
            best = best_tile(reports)
            print(f"{name}: best tile by the model {best} (default {defaults.get(name)})", file=sys.stderr)
    print(markdown(everything))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in everything], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
