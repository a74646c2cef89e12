"""mpi_bench.c's twin on mpi4py.futures' MPIPoolExecutor, run in the same launch shape:
mpirun -n 3 python3 -m mpi4py.futures bench/mpi4py_bench.py (rank 0 the client, 2 worker
ranks). Prints RESULT lines as the C benchmarks do (impl "python")."""
import statistics, time

from mpi4py.futures import MPIPoolExecutor


def echo(x):
    return x


def square(x):
    return x * x


def result(case, value, unit):
    print(f"RESULT {case} python {value:.6g} {unit}", flush=True)


def main():
    with MPIPoolExecutor() as ex:
        list(ex.map(echo, range(1000)))  # the workers are up and warm
        rates = []
        for _ in range(3):
            n = 10000
            t0 = time.perf_counter()
            fs = [ex.submit(echo, b"12345678") for _ in range(n)]
            for f in fs:
                f.result()
            rates.append(n / (time.perf_counter() - t0))
        result("mpi_apply_async_rate", statistics.median(rates), "tasks/s")
        n, workers = 1000000, 2
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            out = list(ex.map(square, range(n), chunksize=-(-n // (4 * workers))))
            times.append(time.perf_counter() - t0)
            assert out[12345] == 12345 * 12345
        result("mpi_map_1M_int64", statistics.median(times) * 1e3, "ms")


if __name__ == "__main__":
    main()
