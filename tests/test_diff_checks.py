"""The diff's input checks and output validation (issue 9, item 8).

Damaged corpus objects that used to crash the diff or give invalid outputs
are refused with a typed error and write nothing.  The output validation
is tested on its own by corrupting a finished output in memory: it must
raise ``DiffOutputError`` and leave no file.
"""

from __future__ import annotations

import pytest
from elf_mutations import FieldEditor

from pykpatch.diff import engine, output, run_diff
from pykpatch.elf.constants import SHF, SHT
from pykpatch.elf.model import Relocation, Section
from pykpatch.errors import DiffInputError, DiffOutputError, ElfFormatError, PykpatchError, UnsupportedChangeError
from pykpatch.symtab import KernelSymbolTable

R_X86_64_PC16 = 13


def corpus_pair(corpus_dir, corpus_cases, name):
    orig = corpus_dir / f"{name}.ORIG.o"
    sizes = {k: int(v) for k, v in corpus_cases[name]["env"].items()}
    return orig, corpus_dir / f"{name}.PATCHED.o", KernelSymbolTable.load(orig), sizes


def diff_damaged(tmp_path, corpus_dir, corpus_cases, name, edit, expect=PykpatchError):
    """Diff ORIG against PATCHED damaged by ``edit(FieldEditor)``; return the error (nothing written)."""
    orig, patched, table, sizes = corpus_pair(corpus_dir, corpus_cases, name)
    editor = FieldEditor(patched.read_bytes())
    edit(editor)
    damaged = tmp_path / "patched.o"
    damaged.write_bytes(bytes(editor.bytes))
    out = tmp_path / "out.o"
    with pytest.raises(expect) as err:
        run_diff(str(orig), str(damaged), "vmlinux", table, None, sizes, str(out))
    assert not out.exists()
    return err.value


SHT_GNU_ATTRIBUTES = 0x6FFFFFF5


@pytest.mark.parametrize("new_type,expect", [(SHT_GNU_ATTRIBUTES, UnsupportedChangeError),
                                             (SHT.PROGBITS, DiffInputError)])
def test_relocation_section_whose_type_changed_is_refused(tmp_path, corpus_dir, corpus_cases, new_type, expect):
    """Was: AttributeError in correlate.py (the static-local pass read the twin's relocations).

    As a plain PROGBITS section its sh_link (.symtab) breaks the gABI: refused as input; as an
    OS-specific type it reaches the diff, which pairs it by name and finds the headers differ.
    """
    err = diff_damaged(tmp_path, corpus_dir, corpus_cases, "gcc-static-local-var-3",
                       lambda e: e.set_header(".rela.text.run_cmd", "sh_type", new_type), expect=expect)
    reasons = err.reasons if isinstance(err, UnsupportedChangeError) else [str(err)]
    assert any(".rela.text.run_cmd" in r for r in reasons), reasons


def test_relocation_outside_its_section_is_refused(tmp_path, corpus_dir, corpus_cases):
    """Was: an output with an R_X86_64_PC32 at +0x80000000, applied out of bounds by the module loader."""
    err = diff_damaged(tmp_path, corpus_dir, corpus_cases, "cmdline-ubsan",
                       lambda e: e.set_relocation(1, "r_offset", 0x80000000, ".rela.text.cmdline_proc_show"),
                       expect=ElfFormatError)
    assert ".rela.text.cmdline_proc_show" in str(err) and "0x80000000" in str(err)


def test_relocation_type_the_module_loader_cannot_apply_is_refused(tmp_path, corpus_dir, corpus_cases):
    def pc16(editor):
        section = ".rela.text.cmdline_proc_show"
        editor.set_relocation(1, "r_info", editor.relocation(1, section)[1] & ~0xFFFFFFFF | R_X86_64_PC16, section)

    err = diff_damaged(tmp_path, corpus_dir, corpus_cases, "cmdline-ubsan", pc16, expect=DiffInputError)
    assert "R_X86_64_PC16" in str(err) and ".rela.text.cmdline_proc_show" in str(err)


def test_symbol_with_a_reserved_section_index_is_refused(tmp_path, corpus_dir, corpus_cases):
    """Was: an output symbol with st_shndx 0xff00 (the reader keeps processor-specific indexes)."""
    err = diff_damaged(tmp_path, corpus_dir, corpus_cases, "data-new",
                       lambda e: e.set_symbol("si_meminfo", "st_shndx", 0xFF00), expect=DiffInputError)
    assert "si_meminfo" in str(err) and "0xff00" in str(err)


def test_section_alignment_the_writer_cannot_honour_is_refused(tmp_path, corpus_dir, corpus_cases):
    """Was: ElfWriteError (a bug class) from the writer, after the whole diff ran."""
    err = diff_damaged(tmp_path, corpus_dir, corpus_cases, "cmdline-ubsan",
                       lambda e: e.set_header(".text.cmdline_proc_show", "sh_addralign", 1 << 20),
                       expect=DiffInputError)
    assert ".text.cmdline_proc_show" in str(err) and "alignment" in str(err)


def test_code_referring_to_mcount_loc_is_refused(tmp_path, corpus_dir, corpus_cases):
    """Was: DiffOutputError (a relocation to the __mcount_loc the output rebuilds) for a valid type."""
    def to_mcount_loc(editor):
        section = ".rela.text.show_val_kb"
        index = editor.parse().find_section("__mcount_loc").symbol.index
        editor.set_relocation(0, "r_info", index << 32 | editor.relocation(0, section)[1] & 0xFFFFFFFF, section)

    err = diff_damaged(tmp_path, corpus_dir, corpus_cases, "data-new", to_mcount_loc, expect=DiffInputError)
    assert ".rela.text.show_val_kb" in str(err) and "__mcount_loc" in str(err)


def test_relocation_straddling_two_special_section_entries_is_refused(tmp_path, corpus_dir, corpus_cases):
    """Was: DiffOutputError, a relocation at 0x2 of a regenerated 4-byte .return_sites (fuzz seed 1)."""
    err = diff_damaged(tmp_path, corpus_dir, corpus_cases, "import-ns",
                       lambda e: e.set_relocation(1, "r_offset", 2, ".rela.return_sites"), expect=DiffInputError)
    assert ".return_sites" in str(err) and "0x2" in str(err)


# -- the output validation, on outputs corrupted after they were built ------------------------------

def corrupted_run(monkeypatch, tmp_path, corpus_dir, corpus_cases, name, corrupt):
    """Run a good corpus case with ``corrupt(plan)`` applied to the built output plan."""
    real = engine.build_output

    def build_then_corrupt(st, lookup, parent):
        plan = real(st, lookup, parent)
        corrupt(plan)
        return plan

    monkeypatch.setattr(engine, "build_output", build_then_corrupt)
    orig, patched, table, sizes = corpus_pair(corpus_dir, corpus_cases, name)
    out = tmp_path / "out.o"
    with pytest.raises(DiffOutputError) as err:
        run_diff(str(orig), str(patched), "vmlinux", table, None, sizes, str(out))
    assert not out.exists()
    assert "internal error" in str(err.value) and err.value.hint
    return err.value


def _text_of(plan, name):
    return next(s for s in plan.obj.sections if s.name == name)


def test_output_with_a_relocation_outside_its_section_is_not_written(monkeypatch, tmp_path, corpus_dir,
                                                                     corpus_cases):
    def corrupt(plan):
        text = _text_of(plan, ".text.cmdline_proc_show")
        text.rela.relocations.append(Relocation(text.size - 2, 2, text.rela.relocations[0].symbol, -4))

    err = corrupted_run(monkeypatch, tmp_path, corpus_dir, corpus_cases, "cmdline-ubsan", corrupt)
    assert any(".rela.text.cmdline_proc_show" in p for p in err.problems), err.problems


def test_output_with_a_stray_sh_info_is_not_written(monkeypatch, tmp_path, corpus_dir, corpus_cases):
    def corrupt(plan):
        _text_of(plan, ".text.cmdline_proc_show").info = _text_of(plan, ".pykpatch.strings")

    err = corrupted_run(monkeypatch, tmp_path, corpus_dir, corpus_cases, "cmdline-ubsan", corrupt)
    assert any("sh_info" in p for p in err.problems), err.problems


def test_output_with_a_wrong_livepatch_sympos_is_not_written(monkeypatch, tmp_path, corpus_dir, corpus_cases):
    """reboot_setup is the only local of that name in the parent: sympos 1, never 7."""
    real = output.plan_output

    def wrong_sympos(st, lookup, parent):
        plan = real(st, lookup, parent)
        for k in plan.klp_relocs:
            if k.name == "reboot_setup":
                k.sympos = 7
        return plan

    monkeypatch.setattr(output, "plan_output", wrong_sympos)
    err = corrupted_run(monkeypatch, tmp_path, corpus_dir, corpus_cases, "gcc-static-local-var-3", lambda plan: None)
    assert any("reboot_setup" in p and "7" in p for p in err.problems), err.problems


def test_output_patching_a_function_the_parent_lacks_is_not_written(monkeypatch, tmp_path, corpus_dir, corpus_cases):
    real = output.plan_output

    def renamed(st, lookup, parent):
        plan = real(st, lookup, parent)
        plan.funcs[0].name = "no_such_function"
        return plan

    monkeypatch.setattr(output, "plan_output", renamed)
    err = corrupted_run(monkeypatch, tmp_path, corpus_dir, corpus_cases, "cmdline-ubsan", lambda plan: None)
    assert any("no_such_function" in p for p in err.problems), err.problems


def test_output_livepatch_relocation_outside_its_section_is_not_written(monkeypatch, tmp_path, corpus_dir,
                                                                        corpus_cases):
    real = output.plan_output

    def far(st, lookup, parent):
        plan = real(st, lookup, parent)
        plan.klp_relocs[0].offset = plan.klp_relocs[0].section.size - 2  # its 4 bytes cross the end
        return plan

    monkeypatch.setattr(output, "plan_output", far)
    err = corrupted_run(monkeypatch, tmp_path, corpus_dir, corpus_cases, "gcc-static-local-var-3", lambda plan: None)
    assert any("livepatch relocation" in p and "outside" in p for p in err.problems), err.problems


def test_plain_sections_keep_no_links_in_the_output(monkeypatch, tmp_path, corpus_dir, corpus_cases):
    """Sanity of the corruption above: without it, the same case is written and valid."""
    orig, patched, table, sizes = corpus_pair(corpus_dir, corpus_cases, "cmdline-ubsan")
    out = tmp_path / "out.o"
    run_diff(str(orig), str(patched), "vmlinux", table, None, sizes, str(out))
    from pykpatch.elf import read_elf

    obj = read_elf(out)
    plain = [s for s in obj.sections if isinstance(s, Section) and s.type == SHT.PROGBITS]
    assert plain and all(s.info == 0 or s.flags & SHF.INFO_LINK for s in plain)
