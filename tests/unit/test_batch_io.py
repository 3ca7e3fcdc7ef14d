"""Rows written per batch must be byte for byte what faust's own table write would send to the
changelog, or recovery and standby replicas would read something else."""

from __future__ import annotations

from tests.unit.test_layout import run

CODE = """
import app, faust_ext
from core.settings import Settings
faust_ext.install()
app.build(Settings.from_env({"STOREPULSE_STORE_URL": "memory://"}))
from faust_ext.batch_io import TableRows
from state.members import member_state_table as table
rows = TableRows(app.current()[0], table)
s = app.current()[0].serializers
record = {"member_id": "m-1", "visits": 3, "purchases": {"days": {"2026-12-01": [1, 9.5]}},
          "name": "李", "nested": [{"a": None, 7: "int key"}, 1.25]}
assert table.value_serializer in ("json", "orjson")  # else the fast path is never taken
for key in ("m-000123", "anon-abc", "名字", "a/b\\"c\\n", "x\u2028y"):
    want = s.dumps_key(table.key_type, key, serializer=table.key_serializer)
    assert rows._key(key) == want, (key, rows._key(key), want)
want = s.dumps_value(table.value_type, record, serializer=table.value_serializer)
assert rows._value(record) == want, (rows._value(record), want)
assert rows._value(None) is None
print("same")
"""


def test_batch_rows_are_encoded_as_faust_encodes_table_writes():
    out = run(CODE)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("same")
