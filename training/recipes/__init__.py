"""Every served model version, by name: ``python -m training income digits``."""

from __future__ import annotations

from training.recipes import digits, income, iris, salary
from training.recipes.base import Recipe

RECIPES: dict[str, tuple[Recipe, ...]] = {
    "income": (income.RECIPE,),
    "salary": (salary.RECIPE,),
    "iris": iris.RECIPES,
    "digits": digits.RECIPES,
}
