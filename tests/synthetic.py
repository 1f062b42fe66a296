"""Small synthetic datasets in the exact on-disk formats of the real ones.

No real rows are copied: values are drawn at random from the documented domains,
with a label rule the networks can learn, so tests run anywhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WORKCLASS = ["Private", "Self-emp-not-inc", "Local-gov", "State-gov"]
EDUCATION = [("HS-grad", 9), ("Bachelors", 13), ("Masters", 14), ("Some-college", 10)]
MARITAL = ["Married-civ-spouse", "Never-married", "Divorced"]
OCCUPATION = ["Exec-managerial", "Craft-repair", "Sales", "Adm-clerical"]
RELATIONSHIP = ["Husband", "Not-in-family", "Own-child", "Wife"]
RACE = ["White", "Black", "Asian-Pac-Islander"]
SEX = ["Male", "Female"]
COUNTRY = ["United-States", "Mexico", "India"]


def adult_lines(n: int, seed: int, test_format: bool) -> list[str]:
    """Rows like adult.data: ', ' separated, '?' for missing; test labels end with '.'."""
    rng = np.random.default_rng(seed)
    lines = ["|1x3 Cross validator"] if test_format else []
    for i in range(n):
        age = int(rng.integers(17, 80))
        edu, edu_num = EDUCATION[int(rng.integers(len(EDUCATION)))]
        hours = int(rng.integers(10, 70))
        gain = int(rng.choice([0, 0, 0, 5000, 15000]))
        rich = (edu_num >= 13 and hours >= 40) or gain > 10000
        workclass = "?" if i % 7 == 3 else WORKCLASS[i % len(WORKCLASS)]
        occupation = "?" if i % 7 == 3 else OCCUPATION[int(rng.integers(len(OCCUPATION)))]
        label = ">50K" if rich else "<=50K"
        fields = [
            age,
            workclass,
            int(rng.integers(20000, 400000)),
            edu,
            edu_num,
            MARITAL[i % 3],
            occupation,
            RELATIONSHIP[i % 4],
            RACE[i % 3],
            SEX[i % 2],
            gain,
            0,
            hours,
            "?" if i % 11 == 5 else COUNTRY[i % 3],
            label + ("." if test_format else ""),
        ]
        lines.append(", ".join(str(f) for f in fields))
    return lines


SALARY_AGES = ["18-24", "25-34", "35-44", "45-54", "55-64"]
SALARY_EXPERIENCE = ["2 - 4 years", "5-7 years", "8 - 10 years", "11 - 20 years", "21 - 30 years"]
SALARY_EDUCATION = ["High School", "College degree", "Master's degree", "PhD"]


def salary_csv(n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    rows = [
        '"","age","annual_salary","professional_experience_years","highest_edu_level",'
        '"gender","industry","job_title"'
    ]
    for i in range(n):
        a, e, d = (
            int(rng.integers(len(x))) for x in (SALARY_AGES, SALARY_EXPERIENCE, SALARY_EDUCATION)
        )
        gender = ["Man", "Woman"][i % 2]
        salary = 40000 + 20000 * e + 15000 * d + int(rng.integers(0, 30000))
        rows.append(
            f'"{i + 1}","{SALARY_AGES[a]}",{salary},"{SALARY_EXPERIENCE[e]}",'
            f'"{SALARY_EDUCATION[d]}","{gender}","Tech","Engineer"'
        )
    return "\n".join(rows) + "\n"


def digit_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Crude 28x28 'digits': class k is a bar at a position set by k, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = rng.integers(0, 30, size=(n, 28, 28)).astype(np.uint8)
    for i, k in enumerate(labels):
        images[i, 4:24, 2 + 2 * k : 4 + 2 * k] = 255
    return images, labels.astype(np.uint8)


def write_all(folder: Path) -> None:
    (folder / "adult.data").write_text("\n".join(adult_lines(400, 1, False)) + "\n")
    (folder / "adult.test").write_text("\n".join(adult_lines(200, 2, True)) + "\n\n")
    (folder / "salary_data_cleaned.csv").write_text(salary_csv(300, 3))
    x_train, y_train = digit_images(300, 4)
    x_test, y_test = digit_images(100, 5)
    np.savez_compressed(
        folder / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test
    )
