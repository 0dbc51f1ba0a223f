"""Writes a Delta table for the tests, in three versions, with the `deltalake` package.

    write_delta.py TABLE_DIR FIRST.parquet SECOND.parquet [PARTITION_COLUMN]

Version 0 holds the rows of FIRST, version 1 adds those of SECOND, and version 2 deletes
every row whose customer_id is a multiple of 7 (rewriting the files that held them). With
PARTITION_COLUMN, the table is partitioned by that column.
"""

import sys

import pyarrow.parquet as pq
from deltalake import DeltaTable, write_deltalake


def main() -> None:
    table_dir, first, second = sys.argv[1:4]
    partition_by = sys.argv[4:5] or None
    write_deltalake(table_dir, pq.read_table(first), mode="overwrite", partition_by=partition_by)
    write_deltalake(table_dir, pq.read_table(second), mode="append", partition_by=partition_by)
    DeltaTable(table_dir).delete("customer_id % 7 = 0")
    print(DeltaTable(table_dir).version())


if __name__ == "__main__":
    main()
