from __future__ import annotations

import io
import pickle
import subprocess
import sys
import textwrap
import zipfile
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pytest

from metatree import serializers
from metatree._streams import BufferReader, ChunkReader
from metatree.errors import CorruptMetadataError, MetadataError
from metatree.serializers import (
    Serializer,
    register_serializer,
    serializer_for,
    serializer_named,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import BinaryIO


def forward_only(data: bytes, piece: int = 3) -> ChunkReader:
    """The stream a DataStore load reads: the file's chunks as they arrive, size known."""
    return ChunkReader(iter([data[i : i + piece] for i in range(0, len(data), piece)]), len(data))


def round_trip(value: object, *, allow_pickle: bool = False) -> tuple[str, object]:
    """Dump `value`, check `source` gives the same bytes, load it as a DataStore does.

    Loaded from a seekable stream and from a forward-only one in 3-byte chunks; the second
    is returned (the first must not fail), and it must end where the value ends.
    """
    serializer = serializer_for(value, allow_pickle=allow_pickle)
    out = io.BytesIO()
    serializer.dump(value, out)
    data = out.getvalue()
    direct = serializer.source(value)
    if direct is not None:  # the same bytes, streamed from the value itself
        with direct:
            assert direct.read() == data
    loader = serializer_named(serializer.name, allow_pickle=allow_pickle)
    loader.load(io.BytesIO(data))
    stream = forward_only(data)
    loaded = loader.load(cast("BinaryIO", stream))
    assert stream.finish()  # nothing left after the value
    return serializer.name, loaded


def test_builtin_names_and_suffixes() -> None:
    found = {s.name: s.suffix for s in serializers._BUILTINS}
    assert found == {
        "bytes": ".bin",
        "numpy": ".npy",
        "pandas": ".parquet",
        "arrow": ".parquet",
        "json": ".json",
        "pickle": ".pkl",
    }


# bytes


@pytest.mark.parametrize("value", [b"", b"\x00\xff" * 10, bytearray(b"abc"), memoryview(b"hello")])
def test_bytes_round_trip_as_bytes(value: bytes | bytearray | memoryview) -> None:
    assert round_trip(value) == ("bytes", bytes(value))


def test_strided_memoryview_is_refused() -> None:
    with pytest.raises(MetadataError, match="C-contiguous"):
        serializer_for(memoryview(b"abcdef")[::2])


# json


@pytest.mark.parametrize(
    "value",
    [None, True, 0, 2**64 - 1, -(2**63), 1.5, "é\u2028", [], {}, {"a": [1, {"b": None}]}],
)
def test_json_round_trip(value: object) -> None:
    name, loaded = round_trip(value)
    assert name == "json"
    assert loaded == value
    assert type(loaded) is type(value)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ([1.0, float("nan")], "not a JSON number"),
        ({"a": (1, 2)}, "use a list"),
        ({1: "x"}, "dict key"),
        ("\ud800", "lone surrogates"),
        (2**64, "64 bits"),
    ],
)
def test_json_refuses_what_does_not_round_trip(value: object, match: str) -> None:
    with pytest.raises(MetadataError, match=match) as info:
        serializer_for(value, where="results.x")
    assert info.value.key == "results.x"
    out = io.BytesIO()
    with pytest.raises(MetadataError, match=match):
        serializer_named("json").dump(value, out)
    assert out.getvalue() == b""


def test_json_corrupt_payload() -> None:
    with pytest.raises(CorruptMetadataError, match="not JSON"):
        serializer_named("json").load(io.BytesIO(b"{not json"))


# numpy


@pytest.mark.parametrize(
    "dtype",
    ["f8", "f4", "i1", "u8", "?", "c16", "<U5", "S3", "M8[ns]", "m8[s]", ">i4", "i4,f8"],
)
@pytest.mark.parametrize("shape", [(), (0,), (0, 3), (2, 3, 4)])
def test_numpy_round_trip(dtype: str, shape: tuple[int, ...]) -> None:
    array = np.zeros(shape, dtype=dtype)
    name, loaded = round_trip(array)
    assert name == "numpy"
    assert isinstance(loaded, np.ndarray)
    assert loaded.dtype == array.dtype
    assert loaded.shape == shape
    np.testing.assert_array_equal(loaded, array)


def test_numpy_values_and_fortran_order() -> None:
    array = np.asfortranarray(np.arange(24, dtype="f8").reshape(4, 6))
    array[1, 2] = np.nan
    _, loaded = round_trip(array)
    assert isinstance(loaded, np.ndarray)
    assert loaded.flags.f_contiguous
    np.testing.assert_array_equal(loaded, array)
    _, strided = round_trip(array[::2, ::3])
    np.testing.assert_array_equal(strided, array[::2, ::3])


def test_numpy_utf8_field_names_version_3() -> None:
    array = np.array([(1, 2.5)], dtype=[("€", "i4"), ("b", "f8")])
    with pytest.warns(UserWarning, match="format 3.0"):  # numpy's, for old readers
        _, loaded = round_trip(array)
    np.testing.assert_array_equal(loaded, array)


def test_numpy_object_dtype_needs_pickle() -> None:
    array = np.array([1, "a"], dtype=object)
    with pytest.raises(MetadataError, match="allow_pickle"):
        serializer_for(array)
    out = io.BytesIO()
    with pytest.raises(MetadataError, match="Python objects"):
        serializer_named("numpy").dump(array, out)
    assert out.getvalue() == b""
    name, loaded = round_trip(array, allow_pickle=True)
    assert name == "pickle"
    np.testing.assert_array_equal(loaded, array)


def test_numpy_masked_array_is_not_stored_as_npy() -> None:
    masked = np.ma.masked_array([1, 2], mask=[True, False])
    with pytest.raises(MetadataError, match="MaskedArray"):
        serializer_for(masked)
    assert serializer_for(masked, allow_pickle=True).name == "pickle"


def npy(array: np.ndarray[Any, Any], *, allow_pickle: bool = False) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=allow_pickle)
    return out.getvalue()


def hostile_npy() -> list[bytes]:
    header = npy(np.zeros(3))
    claims = io.BytesIO()  # a header that claims 8 PB of data
    np.lib.format.write_array_header_1_0(
        claims, {"descr": "<f8", "fortran_order": False, "shape": (10**15,)}
    )
    huge = claims.getvalue()
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("a.npy", header)
    zero_width = io.BytesIO()  # numpy widens U0 to U1: 10**8 elements from no bytes
    np.lib.format.write_array_header_1_0(
        zero_width, {"descr": "<U0", "fortran_order": False, "shape": (10**8,)}
    )
    flag_shape = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        flag_shape, {"descr": "<f8", "fortran_order": False, "shape": (True,)}
    )
    return [
        zero_width.getvalue(),
        flag_shape.getvalue() + b"\x00" * 8,
        huge + b"\x00" * 8,  # the header's size, never allocated
        header[:-8],  # truncated
        header + b"\x00",  # trailing bytes
        zipped.getvalue(),  # an .npz
        npy(np.array([1, "a"], dtype=object), allow_pickle=True),
        b"garbage",
        b"",
    ]


@pytest.mark.parametrize("payload", hostile_npy())
def test_numpy_hostile_payload_is_corrupt(payload: bytes) -> None:
    with pytest.raises(CorruptMetadataError):
        serializer_named("numpy").load(io.BytesIO(payload))
    with pytest.raises(CorruptMetadataError):  # as a DataStore reads it: never allocated
        serializer_named("numpy").load(cast("BinaryIO", forward_only(payload)))


def test_numpy_header_numpy_would_not_load_is_refused_at_store() -> None:
    fields = np.zeros(1, dtype=[(f"field_{i:04d}", "f8") for i in range(1200)])
    with pytest.raises(MetadataError, match="header"):
        serializer_for(fields)  # it would store, and never load
    out = io.BytesIO()
    with pytest.raises(MetadataError, match="header"):
        serializer_named("numpy").dump(fields, out)
    assert out.getvalue() == b""


def test_numpy_source_is_the_arrays_own_memory() -> None:
    array = np.arange(1000.0)
    direct: object = serializer_for(array).source(array)
    assert isinstance(direct, BufferReader)
    header = len(npy(np.arange(1000.0))) - array.nbytes
    assert direct.size == header + array.nbytes
    array[0] = 7.0  # read from the array itself, not a copy taken before
    direct.seek(header)
    assert direct.read(8) == np.float64(7.0).tobytes()
    strided = np.arange(10.0)[::2]
    assert serializer_for(strided).source(strided) is None  # dumped through a temp file


def test_buffer_reader_reads_across_buffers_and_seeks() -> None:
    reader = BufferReader([b"abc", memoryview(b"defgh"), bytearray(b""), b"ij"])
    assert reader.size == 10
    assert reader.read(2) == b"ab"
    assert reader.read(4) == b"cdef"
    assert reader.seek(-3, io.SEEK_END) == 7
    assert reader.read() == b"hij"
    assert reader.read(5) == b""
    reader.seek(1)
    assert reader.read() == b"bcdefghij"
    with pytest.raises(ValueError, match="negative"):
        reader.seek(-1)


def test_chunk_reader_finish_reports_what_was_left() -> None:
    reader = ChunkReader(iter([b"abc", b"", b"de"]), 5)
    assert reader.read(4) == b"abcd"
    assert reader.tell() == 4
    assert not reader.finish()  # b"e" was left
    closed: list[bool] = []

    def chunks() -> Iterator[bytes]:
        try:
            yield b"xy"
            yield b"z"
        finally:
            closed.append(True)

    with ChunkReader(chunks(), 3) as reader:
        assert reader.read() == b"xyz"
        assert reader.finish()
    with ChunkReader(chunks(), 3) as reader:
        assert reader.read(1) == b"x"
    assert closed == [True, True]  # closing the stream closes the download behind it


class Unseekable(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._data.readinto(buffer)


def test_numpy_loads_from_an_unseekable_stream() -> None:
    array = np.arange(10.0)
    loaded = serializer_named("numpy").load(io.BufferedReader(Unseekable(npy(array))))
    np.testing.assert_array_equal(loaded, array)


# pandas and pyarrow (optional: skipped where they are not installed)


@pytest.fixture
def pd() -> Any:
    pytest.importorskip("pyarrow")
    return pytest.importorskip("pandas")


@pytest.fixture
def pa() -> Any:
    return pytest.importorskip("pyarrow")


def frames(pd: Any) -> list[Any]:
    index = pd.MultiIndex.from_tuples([(1, "a"), (2, "b"), (3, "c")], names=["n", "s"])
    return [
        pd.DataFrame(
            {
                "cat": pd.Categorical(["a", None, "b"], ordered=True),
                "tz": pd.date_range("2024-03-31", periods=3, freq="h", tz="Europe/Rome"),
                "int": pd.array([1, None, 3], dtype="Int64"),
                "float": [1.5, np.nan, -0.0],
                "str": ["x", None, "z"],
                "bool": [True, False, True],
            }
        ),
        pd.DataFrame({"v": [1.0, 2.0, 3.0]}, index=index),
        pd.DataFrame({"v": [1, 2]}, index=pd.Index(["p", "q"], name="key")),
        pd.DataFrame(),
        pd.DataFrame({"a": pd.Series([], dtype="float32"), "b": pd.Series([], dtype="int8")}),
        pd.DataFrame({0: [1], 1: [2]}),
    ]


def test_pandas_frames_round_trip(pd: Any) -> None:
    for frame in frames(pd):
        name, loaded = round_trip(frame)
        assert name == "pandas"
        pd.testing.assert_frame_equal(loaded, frame)


@pytest.mark.parametrize("series_name", [None, "score", 3])
def test_pandas_series_round_trip(pd: Any, series_name: object) -> None:
    series = pd.Series(
        pd.Categorical(["u", None, "v"]), index=pd.Index([10, 20, 30], name="i"), name=series_name
    )
    name, loaded = round_trip(series)
    assert name == "pandas"
    pd.testing.assert_series_equal(loaded, series)
    assert loaded.name == series_name  # type: ignore[attr-defined]


def test_pandas_refusals(pd: Any) -> None:
    with pytest.raises(MetadataError, match=r"Series\.name"):
        serializer_named("pandas").dump(pd.Series([1], name=("a", 1)), io.BytesIO())
    out = io.BytesIO()
    duplicated = pd.DataFrame([[1, 2]], columns=["a", "a"])
    with pytest.raises(MetadataError, match="Arrow cannot store"):
        serializer_named("pandas").dump(duplicated, out)
    mixed = pd.DataFrame({"m": [1, "a"]})
    with pytest.raises(MetadataError, match="Arrow cannot store"):
        serializer_named("pandas").dump(mixed, out)
    assert out.getvalue() == b""  # refused before a byte was written


def test_arrow_table_round_trip(pa: Any) -> None:
    table = pa.table(
        {
            "date64": pa.array([86_400_000, None], pa.date64()),
            "seconds": pa.array([1, 2], pa.timestamp("s", tz="UTC")),
            "dict": pa.array(["a", None]).dictionary_encode(),
            "nested": pa.array([{"l": [1, 2]}, None]),
            "large": pa.array(["x", "y"], pa.large_string()),
            "nulls": pa.array([None, None]),
            "u32": pa.array([1, 2**32 - 1], pa.uint32()),
        }
    )
    for value in (table, table.slice(0, 0), pa.table({})):
        name, loaded = round_trip(value)
        assert name == "arrow"
        assert loaded.schema.equals(value.schema)  # type: ignore[attr-defined]
        assert loaded.to_pylist() == value.to_pylist()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "metadata",
    [
        {b"pandas": b"{bad"},
        {b"pandas": b"[]"},
        {b"pandas": b'{"index_columns": ["zz"], "columns": []}'},
        {b"metatree.series": b'"no such column"'},
        {b"metatree.series": b"{bad"},
        {  # a RangeIndex past any integer: OverflowError inside pandas
            b"pandas": b'{"index_columns": [{"kind": "range", "name": null, "start": 0,'
            b' "stop": 1000000000000000000000000000000, "step": 1}], "columns": []}'
        },
        {b"pandas": b"[" * 200_000 + b"]" * 200_000},  # nested past the recursion limit
    ],
)
def test_pandas_hostile_metadata_is_corrupt(pd: Any, metadata: dict[bytes, bytes]) -> None:
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    stored = io.BytesIO()
    pq.write_table(pa.table({"a": [1]}).replace_schema_metadata(metadata), stored)
    stored.seek(0)
    with pytest.raises(CorruptMetadataError, match="not a pandas frame"):
        serializer_named("pandas").load(stored)


@pytest.mark.parametrize("name", ["pandas", "arrow"])
def test_parquet_corrupt_payload(pa: Any, name: str) -> None:
    with pytest.raises(CorruptMetadataError, match="not Parquet"):
        serializer_named(name).load(io.BytesIO(b"PAR1 nothing of it PAR1"))


# pickle


class Opaque:
    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.value == self.value

    __hash__ = None  # type: ignore[assignment]


def test_pickle_is_opt_in_on_both_sides() -> None:
    with pytest.raises(MetadataError, match="allow_pickle=True"):
        serializer_for(Opaque(1))
    with pytest.raises(MetadataError, match="allow_pickle=True"):
        serializer_named("pickle")
    assert round_trip(Opaque(1), allow_pickle=True) == ("pickle", Opaque(1))
    assert serializer_for(b"x", allow_pickle=True).name == "bytes"  # pickle only as last resort


def test_pickle_refusals() -> None:
    with pytest.raises(MetadataError, match="cannot pickle"):
        serializer_for(lambda: 1, allow_pickle=True).dump(lambda: 1, io.BytesIO())
    loader = serializer_named("pickle", allow_pickle=True)
    for payload in (b"", b"garbage", pickle.dumps(Opaque(1))[:-3]):
        with pytest.raises(CorruptMetadataError, match="not a pickle"):
            loader.load(io.BytesIO(payload))


# registry


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serializers, "_registered", [])


class Complex(Serializer):
    name = "complex"
    suffix = ".txt"

    def accepts(self, value: object) -> bool:
        return isinstance(value, complex)

    def dump(self, value: object, out: BinaryIO) -> None:
        out.write(repr(value).encode())

    def load(self, source: BinaryIO) -> object:
        return complex(source.read().decode())


def test_register_a_user_serializer(registry: None) -> None:
    with pytest.raises(MetadataError, match="no serializer takes complex"):
        serializer_for(1j)
    register_serializer(Complex())
    assert round_trip(2 + 1j) == ("complex", 2 + 1j)


def test_user_serializers_come_first(registry: None) -> None:
    class Everything(Complex):
        name = "everything"

        def accepts(self, value: object) -> bool:
            return True

    register_serializer(Everything())
    assert serializer_for(b"bytes").name == "everything"


def test_unsafe_user_serializer_needs_the_opt_in(registry: None) -> None:
    class Unsafe(Complex):
        name = "unsafe"
        unsafe = True

    register_serializer(Unsafe())
    with pytest.raises(MetadataError, match="no serializer takes complex"):
        serializer_for(1j)
    with pytest.raises(MetadataError, match="allow_pickle=True"):
        serializer_named("unsafe")
    assert round_trip(1j, allow_pickle=True) == ("unsafe", 1j)


@pytest.mark.parametrize(
    ("name", "suffix", "match"),
    [
        ("numpy", ".x", "already registered"),
        ("complex", ".x", "already registered"),
        ("Bad Name", ".x", "serializer name"),
        ("", ".x", "serializer name"),
        ("ok", "x", "suffix"),
        ("ok", "./x", "suffix"),
    ],
)
def test_register_refusals(registry: None, name: str, suffix: str, match: str) -> None:
    register_serializer(Complex())
    bad = type("Bad", (Complex,), {"name": name, "suffix": suffix})
    with pytest.raises(MetadataError, match=match):
        register_serializer(bad())
    with pytest.raises(MetadataError, match="Serializer"):
        register_serializer(object())  # type: ignore[arg-type]
    assert [s.name for s in serializers._registered] == ["complex"]


@pytest.mark.parametrize("stored", ["nope", "", 3, None, ["numpy"]])
def test_unknown_stored_name(stored: object) -> None:
    with pytest.raises(MetadataError, match="no serializer of that name"):
        serializer_named(stored, allow_pickle=True)


def test_import_without_numpy_pandas_pyarrow() -> None:
    code = textwrap.dedent(
        """
        import io, sys
        for name in ("numpy", "pandas", "pyarrow"):
            sys.modules[name] = None
        import metatree
        from metatree.errors import MetadataError
        from metatree.serializers import serializer_for, serializer_named

        Frame = type("DataFrame", (), {"__module__": "pandas.core.frame"})
        assert serializer_for(b"x").name == "bytes"
        assert serializer_for({"a": [1]}).name == "json"
        assert serializer_for(Frame(), allow_pickle=True).name == "pickle"
        for name in ("numpy", "pandas", "arrow"):
            try:
                serializer_named(name).load(io.BytesIO(b""))
            except MetadataError as exc:
                assert "pip install" in str(exc), exc
            else:
                raise AssertionError(name)
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.stdout.strip() == "ok", result.stderr


def test_json_value_that_is_one_large_integer_stays_exact() -> None:
    # orjson reads an integer beyond 64 bits as a float; a document of one number was missed
    assert serializer_named("json").load(io.BytesIO(b"1180591620717411303424")) == 2**70
