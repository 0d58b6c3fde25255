"""Domain folders: the slug rule, case twins and symbolic links, each an error naming the folder."""
import pytest

from qlora.core.paths import DomainNameError, check_domain_name, discover_domains


def test_valid_folders_are_domains_and_hidden_entries_and_files_are_skipped(tmp_path):
    for name in ("legal-ko", "cs-support", "2024", ".git"):
        (tmp_path / name).mkdir()
    (tmp_path / "README.md").write_text("not a domain")
    assert discover_domains(tmp_path) == ["2024", "cs-support", "legal-ko"]


@pytest.mark.parametrize("name", ["a...b", "tab\there", "Legal-ko", "-lead", "under_score", "x" * 64, "한국어"])
def test_a_name_off_the_slug_rule_is_an_error_naming_the_folder(tmp_path, name):
    (tmp_path / "medical-ko").mkdir()
    (tmp_path / name).mkdir()
    with pytest.raises(DomainNameError) as err:
        discover_domains(tmp_path)
    assert repr(name) in str(err.value) and "lowercase letters, digits and '-'" in str(err.value)
    assert "medical-ko" not in str(err.value)  # only the offending folder is named


def test_folders_differing_only_in_case_are_an_error_naming_both(tmp_path):
    (tmp_path / "legal-ko").mkdir()
    (tmp_path / "LEGAL-KO").mkdir()
    with pytest.raises(DomainNameError, match="'LEGAL-KO' and 'legal-ko' differ only in case"):
        discover_domains(tmp_path)


def test_a_symlinked_domain_folder_is_an_error_and_never_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "training"
    root.mkdir()
    (root / "linked").symlink_to(outside, target_is_directory=True)
    with pytest.raises(DomainNameError, match=r"linked: is a symbolic link"):
        discover_domains(root)


def test_check_domain_name_is_the_same_rule():
    assert check_domain_name("medical-ko") == "medical-ko"
    with pytest.raises(DomainNameError, match=r"data/x: domain folder name 'a b'"):
        check_domain_name("a b", "data/x")
