from .dist import release_process_group

__all__ = ['release_process_group']
