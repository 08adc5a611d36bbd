#!/usr/bin/env python3
"""Writes a synthetic, anonymised heart-patient CSV (no real person's data) for the demo.

Columns follow the shape of the well-known Cleveland heart-disease table: age, sex, chest pain
type, resting blood pressure, cholesterol, fasting blood sugar, max heart rate, exercise angina,
ST depression, and the target (1 = disease). Values are drawn from a seeded generator with a
plausible dependence of the target on the features, so the same seed gives the same bytes.

    scripts/heart-csv.py --rows 300 --seed 7 > heart.csv
"""
import argparse
import math
import random
import sys


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=300)
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args()
    if a.rows < 0:
        sys.exit("--rows must be >= 0")
    rng = random.Random(a.seed)
    out = sys.stdout
    out.write("age,sex,cp,trestbps,chol,fbs,thalach,exang,oldpeak,target\n")
    for _ in range(a.rows):
        age = int(rng.gauss(54, 9))
        age = min(max(age, 29), 79)
        sex = rng.choice(["F", "M", "M"])
        cp = rng.choice(["typical", "atypical", "non-anginal", "asymptomatic"])
        trestbps = int(min(max(rng.gauss(131, 17), 94), 200))
        chol = round(min(max(rng.gauss(246, 50), 126), 564), 1)
        fbs = 1 if rng.random() < 0.15 else 0
        thalach = int(min(max(rng.gauss(150 - (age - 54) * 0.9, 20), 71), 202))
        exang = 1 if rng.random() < 0.33 else 0
        oldpeak = round(max(rng.gauss(1.0, 1.1), 0.0), 1)
        z = (
            -0.3
            + 0.04 * (age - 54)
            + (0.8 if sex == "M" else -0.4)
            + (1.2 if cp == "asymptomatic" else -0.3)
            + 0.01 * (trestbps - 131)
            + 0.003 * (chol - 246)
            - 0.03 * (thalach - 150)
            + 0.9 * exang
            + 0.6 * (oldpeak - 1.0)
        )
        target = 1 if rng.random() < 1 / (1 + math.exp(-z)) else 0
        out.write(
            f"{age},{sex},{cp},{trestbps},{chol},{fbs},{thalach},{exang},{oldpeak},{target}\n"
        )


if __name__ == "__main__":
    main()
