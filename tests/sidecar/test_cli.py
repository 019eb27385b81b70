"""`clat-translator` flags and CLAT_* environment variables (docs/sidecar.md "Commands")."""

import pytest
from clat_operator import validation
from clat_translator.cli import build_parser, main


def parse(argv: list[str], monkeypatch: pytest.MonkeyPatch, **env: str) -> object:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return build_parser().parse_args(argv)


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    args = parse(["run"], monkeypatch)
    assert vars(args) | {} == {
        "command": "run",
        "dns64_server": None,
        "plat_prefix": None,
        "plat_prefix_hint": None,
        "uplink": None,
        "clat_v4": "192.0.0.1",
        "clat_v6": None,
        "tun": "clat",
        "mtu": None,
        "listen": "[::]:9180",
        "force": False,
        "offload": True,
        "workers": 1,
        "datapath": "auto",
        "nft_table": "clat_translator",
    }


def test_every_flag_reads_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    args = parse(
        ["run"],
        monkeypatch,
        CLAT_PLAT_PREFIX="2001:db8:64::/96",
        CLAT_PLAT_PREFIX_HINT="2001:db8:6464::/64",
        CLAT_DNS64_SERVER="2001:db8::53, 192.0.2.53 2001:db8::54",
        CLAT_UPLINK="net1",
        CLAT_CLAT_V4="192.0.0.4",
        CLAT_CLAT_V6="2001:db8:aa::1",
        CLAT_TUN="clat0",
        CLAT_MTU="1400",
        CLAT_LISTEN="127.0.0.1:9999",
        CLAT_FORCE="true",
        CLAT_DATAPATH="Kernel",
        CLAT_NFT_TABLE="clat_host",
    )
    assert args.plat_prefix == "2001:db8:64::/96"
    assert args.plat_prefix_hint == "2001:db8:6464::/64"
    assert args.dns64_server == ["2001:db8::53", "192.0.2.53", "2001:db8::54"]
    assert (args.uplink, args.clat_v4, args.clat_v6, args.tun) == (
        "net1",
        "192.0.0.4",
        "2001:db8:aa::1",
        "clat0",
    )
    assert (args.mtu, args.listen, args.force) == (1400, "127.0.0.1:9999", True)
    assert args.datapath == "kernel"
    assert args.nft_table == "clat_host"


def test_flags_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    args = parse(["run", "--mtu", "1300", "--dns64-server", "::1"], monkeypatch, CLAT_MTU="1400")
    assert args.mtu == 1300
    assert args.dns64_server == ["::1"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--plat-prefix", "2001:db8::/80"], "RFC 6052 allows prefix lengths"),
        (["run", "--plat-prefix", "2001:db8:0:0:ff00::/96"], "bits 64-71"),
        (["run", "--plat-prefix", "nonsense"], "not an IPv6 prefix"),
        (["run", "--plat-prefix-hint", "2001:db8::/80"], "RFC 6052 allows prefix lengths"),
        (["run", "--mtu", "50"], "an IPv4 MTU from 68"),
        (["run", "--clat-v4", "300.1.1.1"], "not an IPv4 address"),
        (["run", "--clat-v6", "ff02::1"], "not a unicast address"),
        (["run", "--listen", "::9180"], "brackets"),
        (["run", "--tun", "a-name-far-too-long"], "not an interface name"),
        (["discover", "--dns64-server", "dns.example"], "not an IP address"),
        # nft refuses its keywords as names and a CLAT replaces the table it is given: only
        # names of the CLAT's own kind
        (["run", "--nft-table", "filter"], "argument --nft-table: 'filter' is not a CLAT table"),
        (["run", "--nft-table", "clat-host"], "argument --nft-table: 'clat-host' is not a CLAT"),
        (["run", "--nft-table", "clat" + "x" * 61], "is not a CLAT table name"),
        (
            ["run", "--datapath", "ebpf"],
            "argument --datapath: 'ebpf': one of auto, kernel, userspace",
        ),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_flags_exit_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("prefix", "why"),
    [
        ("fe80::/64", "link-local"),
        ("::ffff:0:0/96", "IPv4-mapped"),
        ("ff0e::/96", "multicast"),
        ("2001:db8::1/96", "no bits set after its length"),
    ],
)
def test_plat_prefix_refuses_what_the_operator_refuses(
    prefix: str, why: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # One rule for both sides: the operator's admission check says the same.
    with pytest.raises(ValueError, match=why):
        validation.plat_prefix(prefix)
    for flag in ("--plat-prefix", "--plat-prefix-hint"):
        with pytest.raises(SystemExit):
            main(["run", flag, prefix])
        err = capsys.readouterr().err
        assert f"argument {flag}: {prefix!r}: " in err and why in err
    monkeypatch.setenv("CLAT_PLAT_PREFIX", prefix)
    with pytest.raises(SystemExit):
        main(["run"])
    err = capsys.readouterr().err
    assert f"CLAT_PLAT_PREFIX: {prefix!r}: " in err and why in err


def test_bad_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CLAT_FORCE", "maybe")
    with pytest.raises(SystemExit) as exit_info:
        main(["run"])
    assert exit_info.value.code == 2
    assert "CLAT_FORCE: 'maybe' is not true or false" in capsys.readouterr().err
    monkeypatch.delenv("CLAT_FORCE")
    monkeypatch.setenv("CLAT_NFT_TABLE", "counter")
    with pytest.raises(SystemExit):
        main(["run"])
    assert "CLAT_NFT_TABLE: 'counter' is not a CLAT table name" in capsys.readouterr().err


def test_discover_without_any_resolver_fails_clearly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # 127.0.0.1 port 53 answers nothing here: a refused or timed-out query is a clear error
    code = main(["discover", "--dns64-server", "127.0.0.254"])
    assert code == 1
    err = capsys.readouterr().err
    assert "no DNS64 prefix from 127.0.0.254" in err
    assert "Traceback" not in err
