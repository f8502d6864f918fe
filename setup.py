"""Install mmdms: ``pip install -e .`` (OpenMMLab packages: requirements/mminstall.txt)."""
import os.path as osp

from setuptools import find_packages, setup


def read_version() -> str:
    namespace: dict = {}
    with open(osp.join(osp.dirname(__file__), 'mmdms', 'version.py')) as f:
        exec(compile(f.read(), 'version.py', 'exec'), namespace)
    return namespace['__version__']


def parse_requirements(fname: str) -> list:
    """Read a requirements file, skipping comments and blank lines."""
    path = osp.join(osp.dirname(__file__), 'requirements', fname)
    with open(path) as f:
        lines = [line.split('#', 1)[0].strip() for line in f]
    return [line for line in lines if line]


def parse_section(fname: str, section: str) -> list:
    """The requirements of the block that starts with the comment ``# <section>:`` in
    ``fname`` and ends at the next blank line."""
    path = osp.join(osp.dirname(__file__), 'requirements', fname)
    found, inside = [], False
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith(f'# {section}:'):
                inside = True
            elif inside and not line:
                break
            elif inside and not line.startswith('#'):
                found.append(line.split('#', 1)[0].strip())
    return found


setup(
    name='mmdms',
    version=read_version(),
    description='Differentiable Model Scaling (DMS) for OpenMMLab',
    long_description=open('README.md').read() if osp.exists('README.md') else '',
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('configs', 'tools', 'tests', 'benchmarks')),
    include_package_data=True,
    python_requires='>=3.8',
    license='Apache License 2.0',
    install_requires=parse_requirements('runtime.txt'),
    extras_require={
        'mim': parse_requirements('mminstall.txt'),
        'tests': parse_requirements('tests.txt'),
        'optional': parse_requirements('optional.txt'),
        'llm': parse_section('optional.txt', 'llm'),
    },
    zip_safe=False,
)
