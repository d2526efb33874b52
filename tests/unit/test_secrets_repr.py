"""No password, secret or token field shows in a dataclass's repr (logs, tracebacks, -vv)."""

import ast
import re
from pathlib import Path

from seawall.refservice.config import ServiceConfig
from seawall.runtime.reconnect import RedisSettings

ROOT = Path(__file__).resolve().parents[2]
SECRET_WORDS = ("password", "secret", "token", "passphrase")


def _is_dataclass(node: ast.ClassDef) -> bool:
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if name == "dataclass":
            return True
    return False


def _is_bool(annotation: ast.expr) -> bool:
    return isinstance(annotation, ast.Name) and annotation.id == "bool"


def _repr_off(value: ast.expr | None) -> bool:
    return (
        isinstance(value, ast.Call)
        and getattr(value.func, "id", getattr(value.func, "attr", "")) == "field"
        and any(
            k.arg == "repr" and isinstance(k.value, ast.Constant) and k.value.value is False
            for k in value.keywords
        )
    )


def _secret_fields() -> tuple[list[str], list[str]]:
    """Return (fields out of the repr, fields in it) of every dataclass under seawall/ and bench/.

    Parsed, not imported: the reference service's modules need FastAPI, which
    only the app hosts have.
    """
    hidden: list[str] = []
    shown: list[str] = []
    for path in sorted([*ROOT.glob("seawall/**/*.py"), *ROOT.glob("bench/**/*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.ClassDef) and _is_dataclass(node)):
                continue
            for item in node.body:
                if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
                    continue
                name = item.target.id.lower()
                # Flags about secrets (secrets_checked: bool) hold none.
                if not any(word in name for word in SECRET_WORDS) or _is_bool(item.annotation):
                    continue
                where = f"{path.relative_to(ROOT)}:{node.name}.{item.target.id}"
                (hidden if _repr_off(item.value) else shown).append(where)
    return hidden, shown


def test_every_secret_field_of_every_dataclass_is_out_of_its_repr() -> None:
    hidden, shown = _secret_fields()
    assert shown == []
    # The walk finds them: both classes that hold passwords today.
    assert any(":RedisSettings.password" in h for h in hidden)
    assert any(":ServiceConfig.redis_password" in h for h in hidden)


def test_redis_settings_repr_hides_both_passwords() -> None:
    settings = RedisSettings(
        sentinels=(("10.0.0.1", 26379),),
        master_name="platform",
        password="redis-never-shown",
        sentinel_password="sentinel-never-shown",
    )
    text = repr(settings) + str(settings)
    assert "never-shown" not in text
    assert "platform" in text  # the rest still shows


def test_service_config_repr_hides_its_passwords() -> None:
    config = ServiceConfig(
        service="execution",
        port=8002,
        redis_password="redis-never-shown",
        sentinel_password="sentinel-never-shown",
        postgres_password="postgres-never-shown",
    )
    assert "never-shown" not in repr(config)
    assert "execution" in repr(config)


def test_no_code_puts_a_password_in_the_environment_children_inherit() -> None:
    # PGPASSWORD / REDISCLI_AUTH set in our own environment passes to every child process
    # (ssh tunnels, pyinfra); the password goes in a DSN, on stdin or in a 0600 file instead.
    setting = re.compile(r"""(environ\[|putenv\(|setdefault\()\s*["'](PGPASSWORD|REDISCLI_AUTH)""")
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted([*ROOT.glob("seawall/**/*.py"), *ROOT.glob("bench/**/*.py")])
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if setting.search(line)
    ]
    assert found == []
